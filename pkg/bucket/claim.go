package bucket

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// Claim takes rec's prefix for rec's public key (docs/contract.md §4). A key with a
// revoked.* record fails with ErrRevoked before anything is written. Then:
// Create the key; if it exists, Get it: the same public key rewrites the
// record with Update on the revision read (an agent restart), another key
// fails with *InUseError. Of any number of hosts racing for one prefix
// exactly one wins. It returns the revision of the stored record. The agent
// then calls ReleaseCopies.
//
// The rewrite of an unchanged record announces a restart: the record is then
// the newest, and the newer end of a pair starts the first handshake (§5),
// which the peers, holding sessions with a device that is gone, would not.
// But it also makes every other record of the key the older one, and the
// older record keeps a key (§4): where one exists (a copy someone planted at
// their own prefix), the agent claims with ClaimKeep instead.
func Claim(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) (uint64, error) {
	return claim(ctx, kv, rec, true)
}

// ClaimKeep is Claim that leaves an unchanged record as it is, so that no
// other record of its key becomes the older one.
func ClaimKeep(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) (uint64, error) {
	return claim(ctx, kv, rec, false)
}

func claim(ctx context.Context, kv jetstream.KeyValue, rec peer.Record, rewrite bool) (uint64, error) {
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
	var lostOn uint64 // the revision the last lost Update was made on
	for rounds, stale := 0, 0; rounds < claimAttempts && stale < staleReads; {
		rev, err := kv.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("claim %s: create %s: %w", prefix, key, err)
		}
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			stale++ // deleted between Create and Get, or a replica behind: try Create again
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("claim %s: get %s: %w", prefix, key, err)
		}
		holder, herr := decodeHolder(cur.Value())
		if herr != nil || holder.PublicKey != rec.PublicKey {
			// A record we cannot read is still someone's claim: never overwrite it.
			return 0, &InUseError{Prefix: prefix, Holder: holder}
		}
		if holder == rec && !rewrite {
			return cur.Revision(), nil
		}
		rev, err = kv.Update(ctx, key, val, cur.Revision())
		if err == nil {
			return rev, nil
		}
		if !isWrongRevision(err) {
			return 0, fmt.Errorf("claim %s: update %s at revision %d: %w", prefix, key, cur.Revision(), err)
		}
		// Lost to another writer. On a replicated bucket the next Get may
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
			return 0, fmt.Errorf("claim %s: %w", prefix, err)
		}
	}
	return 0, fmt.Errorf("claim %s: key %s kept changing under %d attempts (or its replicas never caught up)", prefix, key, claimAttempts)
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

// Copy is a record of a host's public key under another prefix than its
// claim: left behind when the host moved, or written by someone else.
type Copy struct {
	Key      string
	Revision uint64
	Record   peer.Record
}

// Leftover reports whether c is rec as it was under another prefix (the
// host moved), not a copy with another name, address or port: every agent
// routing the old prefix to rec's host does no harm while it lasts.
func (c Copy) Leftover(rec peer.Record) bool {
	r := c.Record
	r.AllowedIP = rec.AllowedIP
	return r == rec
}

// SplitCopies parts copies into a stranger's copies and rec's own
// leftovers (Copy.Leftover), keeping their order.
func SplitCopies(copies []Copy, rec peer.Record) (foreign, leftovers []Copy) {
	for _, c := range copies {
		if c.Leftover(rec) {
			leftovers = append(leftovers, c)
		} else {
			foreign = append(foreign, c)
		}
	}
	return foreign, leftovers
}

// FindCopies lists the records of rec's public key under other prefixes
// than rec's, newest first: the oldest is the one every agent routes while
// it stands, so releasing in this order never hands the key to another copy
// on the way.
func FindCopies(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) ([]Copy, error) {
	prefix, err := netip.ParsePrefix(rec.AllowedIP)
	if err != nil {
		return nil, fmt.Errorf("copies: allowed_ip %q: %w", rec.AllowedIP, err)
	}
	entries, err := Scan(ctx, kv, peer.PeersPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("copies of %s: %w", rec.PublicKey, err)
	}
	var out []Copy
	for _, e := range entries {
		if e.Key() == peer.Key(prefix) {
			continue
		}
		if r, err := decodeHolder(e.Value()); err == nil && r.PublicKey == rec.PublicKey {
			out = append(out, Copy{Key: e.Key(), Revision: e.Revision(), Record: r})
		}
	}
	slices.SortFunc(out, func(a, b Copy) int { return cmp.Compare(b.Revision, a.Revision) })
	return out, nil
}

// ReleaseCopies deletes each of copies (records of rec's key, see
// FindCopies) that no live host defends (LiveHolder), with compare-and-set
// on its revision and a release marker (ReleaseMarker). A copy on a live
// host's claim is that host's to restore. A nil live (no heartbeat bucket)
// means no live host anywhere. It reports how many it released.
//
// The agent releases the copies that are not leftovers before it writes its
// claim, and the rest after: the claim's write makes every copy the older
// record of the key, which other agents would then route, for a moment, to
// whatever address a stranger's copy names; a leftover only names this host.
func ReleaseCopies(ctx context.Context, js jetstream.JetStream, kv, live jetstream.KeyValue, rec peer.Record, copies []Copy) (int, error) {
	released := 0
	for _, c := range copies {
		at, err := peer.ParseKey(c.Key)
		if err != nil {
			continue
		}
		if hb, moved, err := LiveHolder(ctx, kv, live, at, rec.PublicKey); err != nil || (hb.PublicKey != "" && !moved.IsValid()) {
			continue
		}
		err = ReleaseMarker(ctx, js, kv.Bucket(), c.Key, c.Revision, rec.PublicKey)
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
