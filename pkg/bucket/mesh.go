package bucket

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Mesh is a binary's one handle on a mesh in NATS: the connection and the
// mesh's two buckets (records and revocations; heartbeats), with every
// operation the three binaries need. Nothing outside this package holds a
// KeyValue or names a JetStream type.
type Mesh struct {
	*Conn
	kv jetstream.KeyValue

	mu   sync.Mutex
	live jetstream.KeyValue // nil until opened: it may not exist yet

	// batches: the server answered a direct get with a batch (2.11 on).
	batches atomic.Bool
}

// Open opens the mesh's bucket, creating it (with the configured replicas)
// when it is missing and create is set; only agents create it. The
// heartbeat bucket is opened when first used.
func (c *Conn) Open(ctx context.Context, create bool) (*Mesh, error) {
	kv, err := open(ctx, c.JS, c.nats.Bucket, meshKind, create, c.nats.Replicas)
	if err != nil {
		return nil, c.Explain(err)
	}
	return &Mesh{Conn: c, kv: kv}, nil
}

// Bucket is the name of the mesh's bucket.
func (m *Mesh) Bucket() string { return m.kv.Bucket() }

// liveBucket is the heartbeat bucket, created when missing and create is
// set; nil (no error) when it does not exist and may not be created.
func (m *Mesh) liveBucket(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live != nil {
		return m.live, nil
	}
	kv, err := open(ctx, m.JS, LiveBucket(m.nats.Bucket), liveKind, create, m.nats.Replicas)
	if errors.Is(err, ErrBucketMissing) && !create {
		return nil, nil
	}
	if err != nil {
		return nil, m.Explain(err)
	}
	m.live = kv
	return kv, nil
}

// Claim claims rec's prefix for it (see the package function Claim).
func (m *Mesh) Claim(ctx context.Context, rec peer.Record, sign func(*peer.Record) error) (peer.Record, uint64, error) {
	return Claim(ctx, m.kv, rec, sign)
}

// Claimed reports whether prefix has a record in the bucket.
func (m *Mesh) Claimed(ctx context.Context, prefix netip.Prefix) (bool, error) {
	return Claimed(ctx, m.kv, prefix)
}

// Revoked reports whether pk has a revocation in the bucket (ErrRevoked's
// test, without claiming anything).
func (m *Mesh) Revoked(ctx context.Context, pk wgtypes.Key) (bool, error) {
	err := checkNotRevoked(ctx, m.kv, pk.String())
	if errors.Is(err, ErrRevoked) {
		return true, nil
	}
	return false, m.Explain(err)
}

// HolderKey is the public key in prefix's record: "" when there is none,
// "(unreadable record)" when its value does not decode.
func (m *Mesh) HolderKey(ctx context.Context, prefix netip.Prefix) (string, error) {
	e, err := m.kv.Get(ctx, peer.Key(prefix))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", peer.Key(prefix), m.Explain(err))
	}
	r, err := peer.DecodeRecord(e.Value())
	if err != nil || r.PublicKey == "" {
		return "(unreadable record)", nil
	}
	return r.PublicKey, nil
}

// FindHolder is the record whose prefix contains target (FindHolder).
func (m *Mesh) FindHolder(ctx context.Context, target netip.Prefix) (Holder, error) {
	return FindHolder(ctx, m.kv, target)
}

// FindCopies are the other records naming rec's key (FindCopies).
func (m *Mesh) FindCopies(ctx context.Context, rec peer.Record) ([]Copy, error) {
	return FindCopies(ctx, m.kv, rec)
}

// Evict revokes h's key and deletes its record (Evict).
func (m *Mesh) Evict(ctx context.Context, h Holder, op Operator) error {
	return Evict(ctx, m.JS, m.kv, h.Key, h.Revision, h.Record, op)
}

// DeleteRecord deletes h's record without revoking its key (DeleteRecord).
func (m *Mesh) DeleteRecord(ctx context.Context, h Holder, op Operator) error {
	return DeleteRecord(ctx, m.JS, m.kv, h.Key, h.Revision, h.Record, op)
}

// Unrevoke lifts the revocation of pk (Unrevoke).
func (m *Mesh) Unrevoke(ctx context.Context, pk wgtypes.Key, op Operator) error {
	return Unrevoke(ctx, m.JS, m.kv, pk, op)
}

// Revocations are the revoked keys (Revocations).
func (m *Mesh) Revocations(ctx context.Context) (map[wgtypes.Key]peer.Revocation, error) {
	return Revocations(ctx, m.kv)
}

// Entry is one live value of a bucket, as a listing reads it.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	Created  time.Time // when this revision was written
}

// Records are the live peers.* entries, values as stored (Scan).
func (m *Mesh) Records(ctx context.Context) ([]Entry, error) {
	raw, err := Scan(ctx, m.kv, peer.PeersPrefix+">")
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(raw))
	for i, e := range raw {
		out[i] = Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Created: e.Created()}
	}
	return out, nil
}

// Heartbeats is the latest heartbeat of every prefix; empty while no agent
// has made the heartbeat bucket.
func (m *Mesh) Heartbeats(ctx context.Context) (map[netip.Prefix]Heartbeat, error) {
	live, err := m.liveBucket(ctx, false)
	if err != nil {
		return nil, err
	}
	return Heartbeats(ctx, live)
}

// WriteHeartbeat writes prefix's heartbeat with compare-and-set on after
// (see the package function WriteHeartbeat), making the heartbeat bucket
// when it is missing (agents do; nothing else writes heartbeats).
func (m *Mesh) WriteHeartbeat(ctx context.Context, prefix netip.Prefix, hb Heartbeat, after uint64) (uint64, *Heartbeat, error) {
	live, err := m.liveBucket(ctx, true)
	if err != nil {
		return 0, nil, err
	}
	rev, other, err := WriteHeartbeat(ctx, live, prefix, hb, after)
	if err != nil {
		// The bucket may have been deleted: open (or make) it again next time.
		m.mu.Lock()
		m.live = nil
		m.mu.Unlock()
		return 0, nil, m.Explain(err)
	}
	return rev, other, nil
}

// Status is what a bucket's stream says of itself.
type Status struct {
	What      string // "bucket" or "heartbeat bucket"
	Name      string
	Revision  uint64    // its newest revision
	LastWrite time.Time // when that was written
	History   int64
	Replicas  int
	MaxAge    time.Duration
	Rollups   bool // it accepts Nats-Rollup headers (Problems names the fix)
	// Follow is the subject its stream republishes to (FollowSubject),
	// empty when it does not.
	Follow string
	Values uint64
	// Problems are what is wrong with its settings, each naming its fix.
	Problems []error
}

// Statuses are the mesh's bucket's status and, when it exists, the
// heartbeat bucket's.
func (m *Mesh) Statuses(ctx context.Context) ([]Status, error) {
	st, err := status(ctx, m.kv, meshKind)
	if err != nil {
		return nil, err
	}
	out := []Status{st}
	live, err := m.liveBucket(ctx, false)
	if err != nil || live == nil {
		return out, err
	}
	st, err = status(ctx, live, liveKind)
	return append(out, st), err
}

func status(ctx context.Context, kv jetstream.KeyValue, k kind) (Status, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s %s: %w", k.what, kv.Bucket(), err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return Status{}, fmt.Errorf("status of %s %s: unexpected type %T", k.what, kv.Bucket(), st)
	}
	info := bs.StreamInfo()
	follow := ""
	if republishes(info.Config, kv.Bucket()) {
		follow = FollowSubject(kv.Bucket())
	}
	return Status{
		Follow: follow,
		What:   k.what, Name: kv.Bucket(), Revision: info.State.LastSeq, LastWrite: info.State.LastTime,
		History: st.History(), Replicas: info.Config.Replicas, MaxAge: st.TTL(), Rollups: info.Config.AllowRollup,
		Values: st.Values(), Problems: problems(info.Config, k),
	}, nil
}

// Prepared is what Prepare did to one bucket.
type Prepared struct {
	Status
	Created bool // it was missing and was made now
	Fixed   bool // its settings were brought to ikto's (upgrade)
}

// Prepare makes both of the mesh's buckets as ikto wants them: created when
// missing (with the configured replicas), made to refuse rollups when they
// allow them and to republish when they do not (an operator's credentials
// may; an agent's may not). It stops
// at the first bucket it cannot prepare, returning what it did before.
func (c *Conn) Prepare(ctx context.Context) ([]Prepared, error) {
	var out []Prepared
	for _, b := range []struct {
		name string
		k    kind
	}{{c.nats.Bucket, meshKind}, {LiveBucket(c.nats.Bucket), liveKind}} {
		var p Prepared
		kv, err := open(ctx, c.JS, b.name, b.k, false, c.nats.Replicas)
		if errors.Is(err, ErrBucketMissing) {
			kv, err = open(ctx, c.JS, b.name, b.k, true, c.nats.Replicas)
			p.Created = true
		}
		if err != nil {
			return out, c.Explain(err)
		}
		if p.Fixed, err = upgrade(ctx, c.JS, b.name, b.k); err != nil {
			return out, fmt.Errorf("%w; the %s stays open to rollups until an operator's credentials may update its stream", c.Explain(err), b.k.what)
		}
		if p.Status, err = status(ctx, kv, b.k); err != nil {
			return out, c.Explain(err)
		}
		out = append(out, p)
	}
	return out, nil
}

// DeletionSettle is how long a host waits, after finding the bucket gone or
// deleting a broken one, before it makes the bucket again: nats-server 2.9
// goes on removing a deleted stream's files for a moment after the deletion
// answers, and takes the files of a stream made again in that moment with
// them (ErrStoreFailed).
const DeletionSettle = 250 * time.Millisecond

// created is when the server made the bucket's stream: what tells one
// stream of the bucket from the next.
func (m *Mesh) created(ctx context.Context) (time.Time, error) {
	st, err := m.JS.Stream(ctx, streamName(m.nats.Bucket))
	if err != nil {
		return time.Time{}, m.Explain(err)
	}
	return st.CachedInfo().Created, nil
}

// remake makes the bucket again when it is missing, DeletionSettle after
// finding it so. broken, when not zero, is when the stream that refused a
// write as ErrStoreFailed was made: that stream is deleted first, unless
// another host has already made a new one.
func (m *Mesh) remake(ctx context.Context, broken time.Time) (made bool, err error) {
	name := m.nats.Bucket
	if !broken.IsZero() {
		if at, err := m.created(ctx); err == nil && at.Equal(broken) {
			if err := m.JS.DeleteStream(ctx, streamName(name)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return false, fmt.Errorf("delete the broken stream of bucket %s: %w", name, m.Explain(err))
			}
		}
	}
	_, err = open(ctx, m.JS, name, meshKind, false, m.nats.Replicas)
	if !errors.Is(err, ErrBucketMissing) {
		return false, m.Explain(err)
	}
	if err := sleep(ctx, DeletionSettle); err != nil {
		return false, err
	}
	_, err = open(ctx, m.JS, name, meshKind, true, m.nats.Replicas)
	return err == nil, m.Explain(err)
}

func streamName(bucket string) string { return "KV_" + bucket }
