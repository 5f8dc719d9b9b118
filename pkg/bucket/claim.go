package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
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
// exactly one wins. It returns the revision of the stored record. The
// agent then calls ReleaseCopies.
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

// ReleaseCopies deletes, with compare-and-set on the revision read, every
// record of rec's public key under another prefix that no live host defends
// (LiveHolder): a host that moved leaves one, and anyone may write one. The
// claim just written is newer than all of them, so until they go every agent
// would give the key to the oldest copy (the older revision keeps a key). A
// copy on a live host's claim is that host's to restore. Each delete is a
// release marker (ReleaseMarker). The agent's controller releases what is
// left once its claim is held. It reports how many it released.
func ReleaseCopies(ctx context.Context, js jetstream.JetStream, kv, live jetstream.KeyValue, rec peer.Record) (int, error) {
	prefix, err := netip.ParsePrefix(rec.AllowedIP)
	if err != nil {
		return 0, fmt.Errorf("release copies: allowed_ip %q: %w", rec.AllowedIP, err)
	}
	entries, err := Scan(ctx, kv, peer.PeersPrefix+">")
	if err != nil {
		return 0, fmt.Errorf("release copies of %s: %w", rec.PublicKey, err)
	}
	released := 0
	for _, e := range entries {
		if e.Key() == peer.Key(prefix) {
			continue
		}
		r, err := decodeHolder(e.Value())
		if err != nil || r.PublicKey != rec.PublicKey {
			continue
		}
		at, err := peer.ParseKey(e.Key())
		if err != nil {
			continue
		}
		if live != nil {
			hb, moved, err := LiveHolder(ctx, live, at, rec.PublicKey)
			if err != nil || (hb.PublicKey != "" && !moved.IsValid()) {
				continue
			}
		}
		err = ReleaseMarker(ctx, js, kv.Bucket(), e.Key(), e.Revision(), rec.PublicKey)
		switch {
		case err == nil:
			released++
		case !isWrongRevision(err):
			return released, err
		}
	}
	return released, nil
}

// ReleaseHeader marks a delete marker written by the owner of a copied key
// to release the copy: its value is that owner's public key. A host that
// finds such a marker at its own key (its watch missed the copy before it)
// knows it was no eviction, and writes its record back.
const ReleaseHeader = "Ikto-Released-By"

// kvOperation is the header that makes a KV message a delete or purge
// marker.
const kvOperation = "KV-Operation"

// ReleaseMarker deletes key if it is still at revision rev, with a marker
// that says who released it (ReleaseHeader): the KV API's delete marker plus
// a header the KV API cannot add.
func ReleaseMarker(ctx context.Context, js jetstream.JetStream, bucket, key string, rev uint64, by string) error {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set(kvOperation, "DEL")
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	m.Header.Set(ReleaseHeader, by)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("release %s at revision %d: %w", key, rev, err)
	}
	return nil
}

// Released reports whether the marker at key, at revision rev, is a release
// (ReleaseHeader), read from the stream: a KV entry carries no headers. A
// key written since holds no longer that marker: false.
func Released(ctx context.Context, js jetstream.JetStream, bucket, key string, rev uint64) (bool, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return false, fmt.Errorf("read the marker at %s: %w", key, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "$KV."+bucket+"."+key)
	if err != nil {
		return false, fmt.Errorf("read the marker at %s: %w", key, err)
	}
	return m.Sequence == rev && m.Header.Get(ReleaseHeader) != "", nil
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
