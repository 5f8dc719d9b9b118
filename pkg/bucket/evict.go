package bucket

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// ErrNoHolder is returned by FindHolder when no record's prefix contains the
// address asked for.
var ErrNoHolder = errors.New("no host holds that address")

// ErrNotRevoked is returned by Unrevoke when the key has no revocation.
var ErrNotRevoked = errors.New("public key is not revoked")

// ErrRecordChanged is returned by Evict when the record moved on since it
// was read (another writer updated it): nothing was deleted.
var ErrRecordChanged = errors.New("record changed since it was read")

// Scan returns the live (not deleted) entries whose keys match filter (a NATS
// subject filter such as "peers.>"), in the order the server holds them. It
// reads values, revisions and creation times in one pass, so a listing of a
// big bucket costs one consumer rather than one Get per key. A filter with a
// single subject keeps it working on nats-server 2.9. A scan whose entries
// stop arriving for snapshotIdle (its consumer made on a server that was
// still recovering, or on a cluster member that lost the stream) is started
// again, as the watch's snapshot is, until ctx ends.
func Scan(ctx context.Context, kv jetstream.KeyValue, filter string) ([]jetstream.KeyValueEntry, error) {
	for {
		out, err := scanOnce(ctx, kv, filter)
		if !errors.Is(err, errScanStalled) || ctx.Err() != nil {
			return out, err
		}
	}
}

// errScanStalled: a scan's entries stopped arriving.
var errScanStalled = errors.New("entries stopped arriving")

func scanOnce(ctx context.Context, kv jetstream.KeyValue, filter string) ([]jetstream.KeyValueEntry, error) {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s in bucket %s: %w", filter, kv.Bucket(), err)
	}
	defer w.Stop()
	idle := time.NewTimer(snapshotIdle)
	defer idle.Stop()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s in bucket %s: %w", filter, kv.Bucket(), ctx.Err())
		case <-idle.C:
			return nil, fmt.Errorf("read %s in bucket %s: %w", filter, kv.Bucket(), errScanStalled)
		case e, open := <-w.Updates():
			if !open {
				return nil, fmt.Errorf("read %s in bucket %s: watch closed before the snapshot ended", filter, kv.Bucket())
			}
			if e == nil { // end of the initial values
				return out, nil
			}
			idle.Reset(snapshotIdle)
			if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
				continue
			}
			out = append(out, e)
		}
	}
}

// Holder is the record FindHolder resolved.
type Holder struct {
	Key      string
	Record   peer.Record
	Prefix   netip.Prefix
	Revision uint64
}

// FindHolder returns the peers.* record whose prefix contains target: an
// address (a /32 or /128) or a prefix, which matches the record of that
// prefix or of any prefix covering it. When several records cover target
// (only rejected records can overlap), the most specific one wins, so a rogue
// ::/0 record never shadows the host an operator means. A record whose value
// does not decode is found through the prefix its key encodes, so garbage
// can be evicted too. ErrNoHolder when nothing matches.
func FindHolder(ctx context.Context, kv jetstream.KeyValue, target netip.Prefix) (Holder, error) {
	target = target.Masked()
	entries, err := Scan(ctx, kv, peer.PeersPrefix+">")
	if err != nil {
		return Holder{}, err
	}
	var best Holder
	found := false
	for _, e := range entries {
		h := Holder{Key: e.Key(), Revision: e.Revision()}
		h.Record, _ = peer.DecodeRecord(e.Value()) // garbage still has a key
		p, ok := holderPrefix(h.Key, h.Record)
		if !ok || p.Addr().BitLen() != target.Addr().BitLen() || p.Bits() > target.Bits() || !p.Contains(target.Addr()) {
			continue
		}
		h.Prefix = p
		if !found || better(h, best) {
			best, found = h, true
		}
	}
	if !found {
		return Holder{}, fmt.Errorf("%s in bucket %s: %w", target, kv.Bucket(), ErrNoHolder)
	}
	return best, nil
}

// better orders candidates: longest prefix, then the record whose key is the
// encoding of its prefix, then the older revision.
func better(a, b Holder) bool {
	if a.Prefix.Bits() != b.Prefix.Bits() {
		return a.Prefix.Bits() > b.Prefix.Bits()
	}
	if ak, bk := a.Key == peer.Key(a.Prefix), b.Key == peer.Key(b.Prefix); ak != bk {
		return ak
	}
	return a.Revision < b.Revision
}

// holderPrefix is the prefix a record claims: its allowed_ip, else the prefix
// its key encodes.
func holderPrefix(key string, rec peer.Record) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(rec.AllowedIP); err == nil {
		return p.Masked(), true
	}
	p, err := peer.ParseKey(key)
	return p, err == nil
}

// Operator is who signs what ikto-admin writes: an operator key the agents
// trust (operator_keys) and the mesh's rules, which the signatures bind.
// The zero Operator writes plain delete markers and unsigned revocations,
// which count only in a mesh that trusts no operator key (docs/contract.md
// §5).
type Operator struct {
	Rules peer.Rules
	Key   ed25519.PrivateKey
}

// Signs reports whether op signs what it writes.
func (op Operator) Signs() bool { return op.Key != nil }

// remove deletes the record of pk at key if it is still at revision rev:
// with a marker carrying op's signed command (removing pk's statements up
// to seq), or a plain one.
func (op Operator) remove(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string, rev uint64, pk wgtypes.Key, seq uint64) error {
	if !op.Signs() {
		return Delete(ctx, kv, key, rev)
	}
	return DeleteCommand(ctx, js, kv.Bucket(), key, rev, op.Rules.OperatorCommand(key, pk, seq, op.Key))
}

// Evict removes a host for good: it revokes rec's public key, then deletes
// the record at key if it is still at revision rev. The revocation goes first
// so that, whatever happens to the delete, the host's agent and every other
// agent already treat the key as revoked (docs/contract.md §4). Evict is safe to retry: an
// existing revocation is kept as it is (with its first revoked_at), and a
// record already gone counts as deleted. A record whose public key does not
// parse cannot be revoked and is only deleted.
func Evict(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string, rev uint64, rec peer.Record, op Operator) error {
	pk, err := wgtypes.ParseKey(rec.PublicKey)
	if err == nil && pk != (wgtypes.Key{}) {
		if err := Revoke(ctx, kv, pk, rec, time.Now(), op); err != nil {
			return fmt.Errorf("evict %s: %w", key, err)
		}
	}
	err = op.remove(ctx, js, kv, key, rev, pk, rec.Seq)
	if err == nil || !isWrongRevision(err) {
		if err != nil {
			return fmt.Errorf("evict: %w", err)
		}
		return nil
	}
	// The delete lost its compare-and-set: find out whether the record is
	// gone (an earlier try, or its agent never came back) or was rewritten.
	cur, gerr := kv.Get(ctx, key)
	if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
		return nil
	}
	if gerr != nil {
		return fmt.Errorf("evict %s: %w (and re-reading it: %v)", key, err, gerr)
	}
	moved, _ := peer.DecodeRecord(cur.Value())
	return fmt.Errorf("evict %s: revision %d read, now %d (name %q, public key %s): %w; the old key stays revoked, run evict again to remove the new record",
		key, rev, cur.Revision(), moved.Name, moved.PublicKey, ErrRecordChanged)
}

// DeleteRecord deletes the record rec at key if it is still at revision
// rev, signed by op when it signs: the record goes, its key stays valid.
func DeleteRecord(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string, rev uint64, rec peer.Record, op Operator) error {
	pk, _ := wgtypes.ParseKey(rec.PublicKey)
	return op.remove(ctx, js, kv, key, rev, pk, rec.Seq)
}

// Revoke writes the revoked.<key> entry for pk, describing rec, signed by
// op when it signs. An existing revocation is left as it is.
func Revoke(ctx context.Context, kv jetstream.KeyValue, pk wgtypes.Key, rec peer.Record, now time.Time, op Operator) error {
	rv := peer.Revocation{PublicKey: pk.String(), AllowedIP: rec.AllowedIP, Name: rec.Name, RevokedAt: now.UTC()}
	if op.Signs() {
		op.Rules.SignRevocation(&rv, op.Key)
	}
	val, err := json.Marshal(rv)
	if err != nil {
		return fmt.Errorf("revoke %s: %w", pk, err)
	}
	_, err = createRevocation(ctx, kv, pk, val)
	return err
}

// createRevocation writes val as the revoked.* entry of pk unless there is
// one; created says whether this call wrote it.
func createRevocation(ctx context.Context, kv jetstream.KeyValue, pk wgtypes.Key, val []byte) (created bool, err error) {
	key := peer.RevokedKey(pk)
	_, err = kv.Create(ctx, key, val)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("revoke %s: create %s: %w", pk, key, err)
	}
	return true, nil
}

// Unrevoke lifts the revocation of pk: agents accept records with that key
// again. ErrNotRevoked when there is none. Where agents trust operator
// keys, only a marker with op's signed command lifts it.
func Unrevoke(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, pk wgtypes.Key, op Operator) error {
	key := peer.RevokedKey(pk)
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return fmt.Errorf("unrevoke %s: %w (no %s in bucket %s)", pk, ErrNotRevoked, key, kv.Bucket())
		}
		return fmt.Errorf("unrevoke %s: get %s: %w", pk, key, err)
	}
	if err := op.remove(ctx, js, kv, key, e.Revision(), pk, 0); err != nil {
		return fmt.Errorf("unrevoke %s: %w", pk, err)
	}
	return nil
}

// Revocations returns every revoked key. A revocation whose value is damaged
// still revokes (the key alone does, as in peer.Table) and is returned with
// only PublicKey set.
func Revocations(ctx context.Context, kv jetstream.KeyValue) (map[wgtypes.Key]peer.Revocation, error) {
	entries, err := Scan(ctx, kv, peer.RevokedPrefix+">")
	if err != nil {
		return nil, err
	}
	out := make(map[wgtypes.Key]peer.Revocation, len(entries))
	for _, e := range entries {
		pk, err := peer.ParseRevokedKey(e.Key())
		if err != nil {
			continue // not a revocation the agents would honour either
		}
		rv, _ := peer.DecodeRevocation(e.Value()) // damaged: the key alone revokes
		rv.PublicKey = pk.String()
		out[pk] = rv
	}
	return out, nil
}

// Copy is a record of a public key under another prefix than the one
// asked about.
type Copy struct {
	Key      string
	Revision uint64
	Record   peer.Record
}

// FindCopies lists the records of rec's public key under other prefixes
// than rec's, in key order.
func FindCopies(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) ([]Copy, error) {
	entries, err := Scan(ctx, kv, peer.PeersPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("records of %s: %w", rec.PublicKey, err)
	}
	var out []Copy
	for _, e := range entries {
		if r, err := peer.DecodeRecord(e.Value()); err == nil && r.PublicKey == rec.PublicKey && r.AllowedIP != rec.AllowedIP {
			out = append(out, Copy{Key: e.Key(), Revision: e.Revision(), Record: r})
		}
	}
	return out, nil
}
