package bucket

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// claimAttempts bounds the Create/Get/Update loop. Each lost round means another
// writer changed the key in between; more than a handful is not contention but
// a bug, and must not spin.
const claimAttempts = 8

// staleReads bounds the rounds lost to a replica's stale read (the same
// revision read again): with contentionPolicy's delays, about 5 s.
const staleReads = 30

// contentionPolicy spaces the rounds of a claim that lost a compare-and-set.
var contentionPolicy = retry.Policy{Min: 5 * time.Millisecond, Max: 200 * time.Millisecond}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Claim takes rec's prefix for rec's public key (docs/contract.md §4). A key
// with a revoked.* record fails with ErrRevoked before anything is written.
// Then: Create the key; if it exists, Get it: the same public key rewrites
// the record with Update on the revision read (an agent restart), another
// key fails with *InUseError. Of any number of hosts racing for one prefix
// exactly one wins.
//
// sign, when not nil, signs each record written: its seq is then the time
// in microseconds, or one more than the seq of the record it replaces if
// that is higher, so a key's statements only ever increase. The rewrite of
// an unchanged record announces a restart: the record is then the newest,
// and the newer end of a pair starts the first handshake (§5). Claim
// returns the record written and its revision.
func Claim(ctx context.Context, kv jetstream.KeyValue, rec peer.Record, sign func(*peer.Record) error) (peer.Record, uint64, error) {
	prefix, err := netip.ParsePrefix(rec.AllowedIP)
	if err != nil {
		return rec, 0, fmt.Errorf("claim: allowed_ip %q: %w", rec.AllowedIP, err)
	}
	if err := checkNotRevoked(ctx, kv, rec.PublicKey); err != nil {
		return rec, 0, fmt.Errorf("claim %s: %w", prefix, err)
	}
	key := peer.Key(prefix)
	write := func(after uint64) ([]byte, error) {
		if sign == nil {
			return rec.Encode(), nil
		}
		rec.Seq = max(uint64(time.Now().UnixMicro()), after+1, rec.Seq)
		if err := sign(&rec); err != nil {
			return nil, fmt.Errorf("claim %s: %w", prefix, err)
		}
		return rec.Encode(), nil
	}
	val, err := write(0)
	if err != nil {
		return rec, 0, err
	}
	lost := contentionPolicy.New()
	var lostOn uint64 // the revision the last lost Update was made on
	for rounds, stale := 0, 0; rounds < claimAttempts && stale < staleReads; {
		rev, err := kv.Create(ctx, key, val)
		if err == nil {
			return rec, rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return rec, 0, fmt.Errorf("claim %s: create %s: %w", prefix, key, err)
		}
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			stale++ // deleted between Create and Get, or a replica behind: try Create again
			continue
		}
		if err != nil {
			return rec, 0, fmt.Errorf("claim %s: get %s: %w", prefix, key, err)
		}
		holder, herr := peer.DecodeRecord(cur.Value())
		if herr != nil || holder.PublicKey != rec.PublicKey {
			// A record we cannot read is still someone's claim: never overwrite it.
			return rec, 0, &InUseError{Prefix: prefix, Holder: holder}
		}
		if rec.Handover == (peer.Handover{}) && holder.AllowedIP == rec.AllowedIP {
			// The key was rotated to: its records keep the handover, so
			// the old key stays retired for agents that never saw it.
			rec.Handover = holder.Handover
		}
		if val, err = write(holder.Seq); err != nil {
			return rec, 0, err
		}
		rev, err = kv.Update(ctx, key, val, cur.Revision())
		if err == nil {
			return rec, rev, nil
		}
		if !isWrongRevision(err) {
			return rec, 0, fmt.Errorf("claim %s: update %s at revision %d: %w", prefix, key, cur.Revision(), err)
		}
		// peer.Lost to another writer. On a replicated bucket the next Get may
		// be answered by a replica that has not seen that write yet: a
		// round lost on the revision the last one was lost on is such a
		// stale read, not contention, and counts against staleReads only.
		if cur.Revision() == lostOn {
			stale++
		} else {
			rounds++
		}
		lostOn = cur.Revision()
		if err := sleep(ctx, lost.NextBackOff()); err != nil {
			return rec, 0, fmt.Errorf("claim %s: %w", prefix, err)
		}
	}
	return rec, 0, fmt.Errorf("claim %s: key %s kept changing under %d attempts (or its replicas never caught up)", prefix, key, claimAttempts)
}

// checkNotRevoked fails with ErrRevoked when publicKey has a revoked.* record.
func checkNotRevoked(ctx context.Context, kv jetstream.KeyValue, publicKey string) error {
	pk, err := wgtypes.ParseKey(publicKey)
	if err != nil {
		return fmt.Errorf("public key %q: %w", publicKey, err)
	}
	_, err = kv.Get(ctx, peer.RevokedKey(pk))
	switch {
	case err == nil:
		return fmt.Errorf("%w: public key %s has %s", ErrRevoked, publicKey, peer.RevokedKey(pk))
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return nil
	}
	return fmt.Errorf("look up %s: %w", peer.RevokedKey(pk), err)
}

// isWrongRevision reports a compare-and-set that lost: the key moved on. A
// replicated bucket (nats_kv_replicas > 1) answers with its own code for the
// same thing.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Delete removes key if it is still at revision rev (compare-and-set).
func Delete(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) error {
	if err := kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("delete %s at revision %d: %w", key, rev, err)
	}
	return nil
}

// Claimed reports whether prefix has a record in the bucket (a deleted or
// purged one does not count).
func Claimed(ctx context.Context, kv jetstream.KeyValue, prefix netip.Prefix) (bool, error) {
	e, err := kv.Get(ctx, peer.Key(prefix))
	if errors.Is(err, jetstream.ErrKeyNotFound) { // also a deleted or purged key
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", peer.Key(prefix), err)
	}
	return e.Operation() == jetstream.KeyValuePut, nil
}

// DeleteCommand deletes key if it is still at revision rev, with a marker
// that carries cmd, a signed command (docs/contract.md §5): the KV API's
// delete marker, with the command as its body, which every watch delivers.
func DeleteCommand(ctx context.Context, js jetstream.JetStream, bucket, key string, rev uint64, cmd peer.Command) error {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set("KV-Operation", "DEL")
	m.Data = cmd.Encode()
	if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev)); err != nil {
		return fmt.Errorf("delete %s at revision %d with a signed command: %w", key, rev, err)
	}
	return nil
}
