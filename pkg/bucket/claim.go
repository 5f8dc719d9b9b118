package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// claimAttempts bounds the Create/Get/Update loop. Each lost round means another
// writer changed the key in between; more than a handful is not contention but
// a bug, and must not spin.
const claimAttempts = 8

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

// Claim takes rec's prefix for rec's public key (docs/contract.md §4). A key with a
// revoked.* record fails with ErrRevoked before anything is written. Then:
// Create the key; if it exists, Get it: the same public key refreshes the
// record with Update on the revision read (an agent restart), another key
// fails with *InUseError. Of any number of hosts racing for one prefix
// exactly one wins. It returns the revision of the stored record.
func Claim(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) (uint64, error) {
	prefix, err := netip.ParsePrefix(rec.AllowedIP)
	if err != nil {
		return 0, fmt.Errorf("claim: allowed_ip %q: %w", rec.AllowedIP, err)
	}
	if err := checkNotRevoked(ctx, kv, rec.PublicKey); err != nil {
		return 0, fmt.Errorf("claim %s: %w", prefix, err)
	}
	key := peer.Key(prefix)
	val := rec.Encode()
	lost := contentionPolicy.New()
	for range claimAttempts {
		rev, err := kv.Create(ctx, key, val)
		if err == nil {
			releaseCopies(ctx, kv, rec, key)
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("claim %s: create %s: %w", prefix, key, err)
		}
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // deleted between Create and Get: try Create again
		}
		if err != nil {
			return 0, fmt.Errorf("claim %s: get %s: %w", prefix, key, err)
		}
		holder, herr := decodeHolder(cur.Value())
		if herr != nil || holder.PublicKey != rec.PublicKey {
			// A record we cannot read is still someone's claim: never overwrite it.
			return 0, &InUseError{Prefix: prefix, Holder: holder}
		}
		rev, err = kv.Update(ctx, key, val, cur.Revision())
		if err == nil {
			releaseCopies(ctx, kv, rec, key)
			return rev, nil
		}
		if !isWrongRevision(err) {
			return 0, fmt.Errorf("claim %s: update %s at revision %d: %w", prefix, key, cur.Revision(), err)
		}
		// Lost to another writer. On a replicated bucket the next Get may
		// be answered by a replica that has not seen that write yet: give
		// it a moment rather than lose every round to the same stale read.
		if err := sleep(ctx, lost.NextBackOff()); err != nil {
			return 0, fmt.Errorf("claim %s: %w", prefix, err)
		}
	}
	return 0, fmt.Errorf("claim %s: key %s kept changing under %d attempts", prefix, key, claimAttempts)
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

// releaseCopies deletes, with compare-and-set on the revision read, every
// record of rec's public key under another key than ours: a host that moved
// leaves one, and anyone may write one. The claim just written is newer than
// all of them, so until they go every agent would give the key to the oldest
// copy (the older revision keeps a key). The agent's controller releases
// what is left (what this could not delete) once its claim is held.
func releaseCopies(ctx context.Context, kv jetstream.KeyValue, rec peer.Record, ours string) {
	entries, err := Scan(ctx, kv, peer.PeersPrefix+">")
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Key() == ours {
			continue
		}
		if r, err := decodeHolder(e.Value()); err == nil && r.PublicKey == rec.PublicKey {
			_ = Delete(ctx, kv, e.Key(), e.Revision())
		}
	}
}

func decodeHolder(v []byte) (peer.Record, error) {
	var r peer.Record
	err := json.Unmarshal(v, &r)
	return r, err
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
