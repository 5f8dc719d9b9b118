package bucket

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Following the bucket without a consumer (docs/contract.md §4, §6).
//
// The bucket's stream republishes every message it stores to
// FollowSubject, with its stream sequence in a header. An agent subscribes there with a plain subscription, reads
// the stream's messages by direct get (the snapshot), and then applies what
// the subscription delivers. Republished messages are core NATS: at most
// once. Every message the stream stores is republished and the stream
// numbers its messages without holes, so a hole in the sequence numbers an
// agent has seen is a message it lost; it reads that range again by direct
// get. A lost last message leaves no hole; the probe's look at the stream's
// last sequence finds it.
//
// One rule makes all of this safe to apply in any order: a key's value is
// the message with the highest sequence seen for it. The snapshot, the
// republished messages and the repairs only ever add messages; each is
// applied when it is newer than what is held for its key.

// FollowSubject is the subject a bucket's stream republishes to: the
// subscription agents follow the bucket with.
func FollowSubject(bucket string) string { return "ikto.kv." + bucket + ".>" }

// rePublish is the setting that makes a bucket's stream republish what it
// stores to FollowSubject.
func rePublish(bucket string) *jetstream.RePublish {
	return &jetstream.RePublish{Source: kvPrefix(bucket) + ">", Destination: FollowSubject(bucket)}
}

func kvPrefix(bucket string) string { return "$KV." + bucket + "." }

// republishes reports whether cfg is the stream of bucket, republishing
// whole messages to FollowSubject.
func republishes(cfg jetstream.StreamConfig, bucket string) bool {
	rp := cfg.RePublish
	if rp == nil || rp.HeadersOnly || rp.Destination != FollowSubject(bucket) {
		return false
	}
	return rp.Source == "" || rp.Source == ">" || rp.Source == kvPrefix(bucket)+">"
}

// Headers of republished and directly read messages.
const (
	hdrSequence = "Nats-Sequence"
	hdrSubject  = "Nats-Subject"
	hdrStream   = "Nats-Stream"
	hdrPending  = "Nats-Num-Pending"
	hdrKVOp     = "KV-Operation"
)

// followBuffer is how many republished messages wait for the follower.
// Past it nats.go drops them (a slow consumer), which is a hole like any
// other lost message: read again.
const followBuffer = 16384

// repairDelay is how long a hole waits before it is read again: a message
// that comes late (a cluster's leader changed) closes it for free.
const repairDelay = 50 * time.Millisecond

// follower is the state of one following: what it has seen of the
// stream's sequence, and the newest sequence of every key.
type follower struct {
	known map[string]uint64
	// contig: every sequence up to it was seen (read or republished, or
	// found gone when its range was read again).
	contig uint64
	// ahead are the sequences beyond contig+1 seen so far, and top the
	// highest of them.
	ahead map[uint64]bool
	top   uint64
}

func newFollower(known map[string]uint64, contig uint64) *follower {
	return &follower{known: known, contig: contig, ahead: map[uint64]bool{}, top: contig}
}

// take records w as seen and reports whether it is news for its key.
func (f *follower) take(w peer.Write) bool {
	seq := w.Revision
	switch {
	case seq == f.contig+1:
		f.contig = seq
		f.advance()
	case seq > f.contig+1:
		f.ahead[seq] = true
	}
	f.top = max(f.top, seq)
	if seq <= f.known[w.Key] {
		return false
	}
	f.known[w.Key] = seq
	return true
}

// hole reports whether a sequence below the highest seen is missing.
func (f *follower) hole() bool { return f.top > f.contig }

// readTo records that every sequence up to upTo was read again: what is
// not there was superseded or removed.
func (f *follower) readTo(upTo uint64) {
	if upTo <= f.contig {
		return
	}
	f.contig = upTo
	for seq := range f.ahead {
		if seq <= upTo {
			delete(f.ahead, seq)
		}
	}
	f.advance()
	f.top = max(f.top, f.contig)
}

// advance moves contig over the sequences already seen just beyond it.
func (f *follower) advance() {
	for f.ahead[f.contig+1] {
		delete(f.ahead, f.contig+1)
		f.contig++
	}
}

// followOnce follows a bucket that republishes: subscribe, read the stream,
// then apply what is republished, reading holes again. It reports whether
// the snapshot was delivered.
func (w *Watcher) followOnce(ctx context.Context, out chan<- peer.Batch) bool {
	m := w.Mesh
	msgs := make(chan *nats.Msg, followBuffer)
	sub, err := m.NC.ChanSubscribe(FollowSubject(m.nats.Bucket), msgs)
	if err != nil {
		w.Log.Warn("follow bucket failed; retrying", "bucket", m.nats.Bucket, "err", err)
		return false
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription is in place before the stream's last sequence is
	// read: every message after it is republished to us.
	fctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err = m.NC.FlushWithContext(fctx)
	cancel()
	if err == nil {
		if err = subscribeRefused(m.NC, FollowSubject(m.nats.Bucket)); err != nil {
			w.noFollow = true
			w.Log.Warn("the bucket republishes, but this host may not follow it; following it with a consumer instead", "bucket", m.nats.Bucket, "err", err)
			return false
		}
	}
	if err != nil {
		w.Log.Warn("follow bucket failed; retrying", "bucket", m.nats.Bucket, "err", err)
		return false
	}
	last, known := w.streamState(ctx)
	if !known {
		return false
	}
	w.created = w.instance // the stream this following reads
	w.known = map[string]uint64{}
	var snap peer.Batch
	snap.Snapshot = true
	byKey := map[string]int{}
	add := func(e peer.Write) {
		if i, ok := byKey[e.Key]; ok {
			snap.Entries[i] = e
			return
		}
		byKey[e.Key] = len(snap.Entries)
		snap.Entries = append(snap.Entries, e)
	}
	seen, err := m.scan(ctx, 1, 0, func(e peer.Write) {
		if e.Revision > w.known[e.Key] {
			w.known[e.Key] = e.Revision
			add(e)
		}
	})
	if err != nil {
		if errors.Is(err, errDirectGetRefused) {
			w.noFollow = true
			w.Log.Warn("the bucket republishes, but this host may not read it by direct get; following it with a consumer instead. Credentials made before ikto 0.4 lack the permission: enroll the host again (ikto-admin enroll)",
				"bucket", m.nats.Bucket, "err", err)
		} else if ctx.Err() == nil {
			w.Log.Warn("reading the bucket failed; retrying", "bucket", m.nats.Bucket, "err", err)
		}
		return false
	}
	switch judgeSnapshot(known, last, seen, w.highest, len(snap.Entries)) {
	case snapshotRestored:
		w.highest = 0
	case snapshotBehind:
		w.Log.Warn("the bucket's snapshot is older than what this agent has applied (a cluster member that is behind); reading it again",
			"bucket", m.nats.Bucket, "snapshot_revision", seen, "applied_revision", w.highest, "stream_known", known)
		return false
	}
	// What the scan read is complete up to seen: a message stored while it
	// ran came after everything it had passed. What came after seen is in
	// msgs, or a hole to read again. A scan that ended below the stream's
	// last sequence (a cluster member behind its leader answered) leaves
	// a hole up to it.
	f := newFollower(w.known, seen)
	f.top = max(f.top, last)
	for drained := false; !drained; {
		select {
		case msg := <-msgs:
			if e, ok := w.decodeRepublished(msg); ok && f.take(e) {
				add(e)
			}
		default:
			drained = true
		}
	}
	seen = max(seen, f.top)
	w.highest = max(w.highest, seen)
	snap.Revision = seen
	if !send(ctx, out, snap) {
		return true
	}
	w.followOn(ctx, out, msgs, f)
	return true
}

// decodeRepublished decodes one republished message; a malformed one is logged
// and dropped (the hole it leaves, if any, is read again).
func (w *Watcher) decodeRepublished(msg *nats.Msg) (peer.Write, bool) {
	e, err := message(msg, w.Mesh.nats.Bucket)
	if err != nil {
		w.Log.Warn("dropped a republished message", "bucket", w.Mesh.nats.Bucket, "err", err)
		return peer.Write{}, false
	}
	return e, true
}

// followOn applies republished messages until the following should end:
// ctx done, a Restart kick, or a look at the stream found it made again or
// messages removed under us.
func (w *Watcher) followOn(ctx context.Context, out chan<- peer.Batch, msgs <-chan *nats.Msg, f *follower) {
	m := w.Mesh
	probeEvery := w.Probe
	if probeEvery <= 0 {
		probeEvery = defaultFollowProbe
	}
	probe := time.NewTicker(probeEvery)
	defer probe.Stop()
	var (
		repair *time.Timer // pending while a hole waits to be read again
		audit  audit
	)
	defer audit.stop()
	defer func() {
		if repair != nil {
			repair.Stop()
		}
	}()
	if f.hole() {
		repair = time.NewTimer(0)
	}
	repairDue := func() <-chan time.Time {
		if repair == nil {
			return nil
		}
		return repair.C
	}
	// readAgain reads the stream from contig+1 on and sends what is news;
	// false means the following must end. What it reads is complete up to
	// the highest sequence the answers reach: on a cluster, a member that
	// is behind its leader may answer, and a read that does not reach
	// upTo (a sequence known to exist, or superseded by a later one) is
	// tried again a little later, and after behindTries the bucket is read
	// whole.
	behind := 0
	readAgain := func(upTo uint64) bool {
		var b peer.Batch
		from := f.contig + 1
		last, err := m.scan(ctx, from, 0, func(e peer.Write) {
			if f.take(e) {
				b.Entries = append(b.Entries, e)
			}
		})
		if err != nil {
			if ctx.Err() == nil {
				w.Log.Warn("reading a hole in the bucket's updates failed; reading the bucket again", "bucket", m.nats.Bucket, "from", from, "to", upTo, "err", err)
			}
			return false
		}
		f.readTo(last)
		w.Log.Debug("read a hole in the bucket's updates again", "bucket", m.nats.Bucket, "from", from, "to", last, "found", len(b.Entries))
		if w.Reread != nil {
			w.Reread()
		}
		if last < upTo {
			if behind++; behind >= behindTries {
				w.Log.Warn("the bucket's stream keeps answering short of what it holds; reading it again", "bucket", m.nats.Bucket,
					"read_to", last, "want", upTo)
				return false
			}
		} else {
			behind = 0
		}
		return w.deliver(ctx, out, b, f, &audit)
	}
	retryRepair := func() {
		if f.hole() && repair == nil {
			repair = time.NewTimer(repairDelay << min(behind, 6))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.Restart:
			// A reconnect: what was stored meanwhile was not republished
			// to us. The same stream is caught up with from where we
			// were; another one (made again, or gone back) is read whole.
			info, ok := w.streamInfo(ctx)
			if !ok || w.recreated(info) || info.State.LastSeq < f.contig || w.removed(info, f.contig) == removalFound {
				w.Log.Info("re-reading bucket after reconnect", "bucket", m.nats.Bucket)
				return
			}
			w.Log.Info("catching up with the bucket after reconnect", "bucket", m.nats.Bucket, "from", f.contig+1, "to", info.State.LastSeq)
			f.top = max(f.top, info.State.LastSeq)
			if f.hole() && !readAgain(f.top) {
				return
			}
			retryRepair()
		case <-w.Audit:
			audit.start()
		case <-audit.due():
			if w.audited(ctx, f.contig, &audit) {
				return
			}
		case <-repairDue():
			repair = nil
			if f.hole() && !readAgain(f.top) {
				return
			}
			retryRepair()
		case <-probe.C:
			info, ok := w.streamInfo(ctx)
			if !ok {
				continue
			}
			if w.recreated(info) || w.removed(info, f.contig) == removalFound {
				return
			}
			// A last message lost leaves no hole in what came: the
			// stream's last sequence shows it. Unless it arrives in the
			// meantime (it was on its way), it is read again.
			if last := info.State.LastSeq; last > f.contig {
				f.top = max(f.top, last)
				if repair == nil {
					repair = time.NewTimer(repairDelay)
				}
			}
		case msg := <-msgs:
			var b peer.Batch
			if e, ok := w.decodeRepublished(msg); ok && f.take(e) {
				b.Entries = append(b.Entries, e)
			}
			for more := true; more && len(b.Entries) < maxBatch; {
				select {
				case msg := <-msgs:
					if e, ok := w.decodeRepublished(msg); ok && f.take(e) {
						b.Entries = append(b.Entries, e)
					}
				default:
					more = false
				}
			}
			if f.hole() && repair == nil {
				repair = time.NewTimer(repairDelay)
			}
			if !w.deliver(ctx, out, b, f, &audit) {
				return
			}
		}
	}
}

// behindTries bounds the reads of a hole in a row that stop short of it.
const behindTries = 8

// defaultFollowProbe is the probe of a following without Watcher.Probe.
const defaultFollowProbe = 30 * time.Second

// deliver sends a batch of news, if any.
func (w *Watcher) deliver(ctx context.Context, out chan<- peer.Batch, b peer.Batch, f *follower, a *audit) bool {
	if len(b.Entries) == 0 {
		return true
	}
	w.highest = max(w.highest, f.top)
	if w.rollups {
		a.start()
	}
	return send(ctx, out, b)
}

// recreated reports whether the stream is another than the one the
// following began on.
func (w *Watcher) recreated(info *jetstream.StreamInfo) bool {
	if w.created.IsZero() {
		w.created = info.Created
		return false
	}
	if !info.Created.Equal(w.created) {
		w.Log.Warn("the bucket was deleted and made again; re-reading it", "bucket", w.Mesh.kv.Bucket())
		return true
	}
	return false
}
