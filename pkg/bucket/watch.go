package bucket

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// WatchPolicy spaces the watcher's attempts to re-subscribe.
var WatchPolicy = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// maxBatch bounds one update batch so a flood of writes cannot grow a slice
// without limit; the receiver coalesces consecutive batches anyway.
const maxBatch = 4096

// Watcher follows the whole bucket with one watch at a time.
type Watcher struct {
	Mesh *Mesh
	Log  *slog.Logger
	// Restart, when it fires, makes the watcher drop its watch and take a fresh
	// snapshot. The agent kicks it on every NATS reconnect: an ordered-consumer
	// watch would only notice a restarted server after missed heartbeats.
	Restart <-chan struct{}
	// Backoff spaces failed attempts (zero means WatchPolicy).
	Backoff retry.Policy
	// Probe, when set, is how often a running watch is checked against the
	// bucket's stream (one stream-info request). On a cluster, the watch's
	// consumer lives on one member; when that member goes away while our
	// own connection stays up, nats.go notices only after missed
	// heartbeats and a retry (10 to 30 s). A watch that has still not
	// delivered, one probe later, a revision the stream already held is
	// dropped and the bucket re-read.
	Probe time.Duration
	// Connected, when set, says whether probing makes sense right now; the
	// agent passes its connection state, so an outage sends no requests.
	Connected func() bool
	// Missing, when set, is called when the bucket turns out not to exist
	// (deleted, or a server that lost its store): the agent makes it again.
	Missing func()
	// SnapshotIdle bounds the wait for the next entry of a snapshot (zero
	// means snapshotIdle): a consumer made on a cluster member that then
	// lost the stream delivers nothing more, and nats.go would notice only
	// after missed heartbeats (10 to 15 s). The watch is made again instead.
	SnapshotIdle time.Duration
	// Audit, when it fires, makes the watcher check soon that the stream
	// still holds every message the watch delivered: the agent kicks it when
	// it hears of a purge request. Messages removed by a purge or a rollup
	// are no watch events; the watcher finds them gone by comparing the
	// stream's state with what it delivered, and reads the bucket again.
	Audit <-chan struct{}
	// Reread, when set, is told each time a range of the bucket's stream
	// is read again because what it republished was lost on the way.
	Reread func()
	// Settings, when set, is told what is wrong with the bucket's settings
	// (Problems; none when it is as ikto makes it) each time the watch
	// reads the stream's configuration.
	Settings func(problems []error)

	// known is the revision of every key delivered since the last
	// snapshot: in a stream that keeps one message per key, each of them
	// is still there unless something removed it without an event.
	known map[string]uint64
	// rollups: the stream allowed Nats-Rollup headers when last read, so
	// any update may have been one that removed every other message.
	rollups bool
	// stallRestart is the stream sequence the last stall restart was for:
	// a sequence the watch can never deliver (a message removed outside
	// the KV API) must not cause a restart every probe.
	stallRestart uint64
	// created is when the bucket's stream was made, as the first probe of
	// a watch saw it: a later probe that sees another time found the
	// bucket deleted and made again under a watch that cannot notice.
	created time.Time
	// highest is the highest revision delivered so far, and instance the
	// creation time of the stream it belongs to: a snapshot that ends below
	// it, while the stream itself is past it, comes from a cluster member
	// that is behind and would undo commands (evictions) already applied.
	highest  uint64
	instance time.Time
	// republished: the stream republishes what it stores, as last read,
	// so the watcher follows it with a subscription (follow.go) instead
	// of a consumer. noFollow: that failed for want of permissions, and
	// the consumer stays.
	republished bool
	noFollow    bool
	// gone: the last look found no stream for the bucket.
	gone bool
}

// Run sends a Snapshot batch each time it (re)subscribes and then update
// batches, until ctx is done. It never returns early on NATS errors: a failed
// watch, a closed updates channel (nats.go gives up on a connection) or a
// Restart kick each lead to a new watch after a jittered backoff, so a dead
// server costs a few wakeups a second at most, never a spin.
func (w *Watcher) Run(ctx context.Context, out chan<- peer.Batch) error {
	policy := w.Backoff
	if policy.Max == 0 {
		policy = WatchPolicy
	}
	delays := policy.New()
	for {
		start := time.Now()
		ok := w.watchOnce(ctx, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Only a watch that delivered its snapshot and then lived a while
		// resets the backoff: one that ends right after each snapshot
		// would otherwise re-read the whole bucket ten times a second.
		if ok && time.Since(start) >= policy.Max {
			delays.Reset()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.Restart:
			// A reconnect or a re-made bucket: read it again now, not
			// after the delay a string of failures has built up.
			delays.Reset()
		case <-time.After(delays.NextBackOff()):
		}
	}
}

// watchOnce runs one watch to its end; it reports whether the snapshot was
// delivered (a healthy watch that ended resets the backoff).
func (w *Watcher) watchOnce(ctx context.Context, out chan<- peer.Batch) bool {
	// A kick that arrived before this watch is satisfied by it.
	select {
	case <-w.Restart:
	default:
	}
	last, known := w.streamState(ctx)
	if w.Mesh.Conn != nil && !w.noFollow {
		// How to follow the bucket depends on its settings: without
		// them, try again rather than make a consumer it may not need.
		if !known {
			if w.gone {
				w.Log.Warn("watch bucket failed; retrying", "bucket", w.Mesh.kv.Bucket(), "err", ErrBucketMissing)
				w.missing()
			}
			return false
		}
		if w.republished {
			return w.followOnce(ctx, out)
		}
	}
	kw, err := w.Mesh.kv.WatchAll(ctx)
	if err != nil {
		w.Log.Warn("watch bucket failed; retrying", "bucket", w.Mesh.kv.Bucket(), "err", err)
		if isMissing(err) {
			w.missing()
		}
		return false
	}
	w.created = time.Time{}
	// One watch at a time: this one ends before the next is made.
	defer stopWatch(kw)
	updates := kw.Updates()

	snap, seen, ok := w.readSnapshot(ctx, updates)
	if !ok {
		return false
	}
	switch judgeSnapshot(known, last, seen, w.highest, len(snap.Entries)) {
	case snapshotRestored:
		w.highest = 0 // the stream itself went back (restored): believe it
	case snapshotBehind:
		w.Log.Warn("the bucket's snapshot is older than what this agent has applied (a cluster member that is behind); reading it again",
			"bucket", w.Mesh.kv.Bucket(), "snapshot_revision", seen, "applied_revision", w.highest, "stream_known", known)
		return false
	}
	w.highest = max(w.highest, seen)
	snap.Revision = seen
	if send(ctx, out, snap) {
		w.follow(ctx, out, updates, seen)
	}
	return true
}

type snapshotVerdict int

const (
	snapshotCurrent  snapshotVerdict = iota
	snapshotRestored                 // the stream itself is behind what was applied
	snapshotBehind                   // the snapshot is: do not apply it
)

// judgeSnapshot compares a snapshot that ended at revision seen with the
// highest revision applied so far. last is the stream's last revision as its
// leader has it, when known. A snapshot behind what was applied comes from a
// cluster member that is behind, and would undo commands (an eviction)
// already applied; only the stream's own word (last, also behind) says it
// was restored from a backup instead. Without that word, the snapshot waits:
// a re-read costs little, an eviction undone puts a removed host back.
func judgeSnapshot(known bool, last, seen, highest uint64, entries int) snapshotVerdict {
	switch {
	case known && last < highest:
		return snapshotRestored
	case entries > 0 && seen < highest:
		return snapshotBehind
	}
	return snapshotCurrent
}

// streamState is the bucket's last revision as the stream's leader has it,
// and whether it could be read. A stream made again (another creation time)
// starts the count of revisions seen anew.
func (w *Watcher) streamState(ctx context.Context) (uint64, bool) {
	sctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := w.Mesh.kv.Status(sctx)
	w.gone = isMissing(err)
	if err != nil {
		return 0, false
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, false
	}
	info := bs.StreamInfo()
	w.noteSettings(info.Config)
	if !info.Created.Equal(w.instance) {
		w.instance, w.highest = info.Created, 0
	}
	return info.State.LastSeq, true
}

// readSnapshot collects the watch's initial values up to nats.go's nil
// marker. seen is the highest revision delivered, deletions included.
func (w *Watcher) readSnapshot(ctx context.Context, updates <-chan jetstream.KeyValueEntry) (snap peer.Batch, seen uint64, ok bool) {
	snap.Snapshot = true
	w.known = map[string]uint64{}
	idle := w.SnapshotIdle
	if idle <= 0 {
		idle = snapshotIdle
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return snap, seen, false
		case <-w.Restart:
			return snap, seen, false
		case <-timer.C:
			w.Log.Warn("the bucket's snapshot stopped arriving; watching it again", "bucket", w.Mesh.kv.Bucket(),
				"entries", len(snap.Entries), "idle", idle)
			return snap, seen, false
		case e, open := <-updates:
			if !open {
				w.Log.Warn("watch closed during snapshot; retrying", "bucket", w.Mesh.kv.Bucket())
				return snap, seen, false
			}
			if e == nil {
				return snap, seen, true
			}
			timer.Reset(idle)
			// Delete and purge markers are part of the snapshot: a marker
			// on a host's own key is a command, its absence is not.
			ent := toEntry(e)
			seen = max(seen, ent.Revision)
			w.known[ent.Key] = ent.Revision
			snap.Entries = append(snap.Entries, ent)
		}
	}
}

// follow sends update batches until the watch should end: ctx is done, a
// Restart kick, the channel closed, or a look at the stream (a probe, an
// audit) found the watch stalled or messages removed under it.
func (w *Watcher) follow(ctx context.Context, out chan<- peer.Batch, updates <-chan jetstream.KeyValueEntry, seen uint64) {
	var probe <-chan time.Time
	if w.Probe > 0 {
		t := time.NewTicker(w.Probe)
		defer t.Stop()
		probe = t.C
	}
	var (
		suspect  uint64 // a sequence the stream held at the last probe, beyond seen
		progress bool   // entries arrived since the last probe
		audit    audit
	)
	defer audit.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.Restart:
			w.Log.Info("re-reading bucket after reconnect", "bucket", w.Mesh.kv.Bucket())
			return
		case <-w.Audit:
			audit.start()
		case <-audit.due():
			if w.audited(ctx, seen, &audit) {
				return
			}
		case <-probe:
			if w.stalled(ctx, seen, progress, &suspect) {
				return
			}
			progress = false
		case e, open := <-updates:
			if !open {
				w.Log.Warn("watch closed; re-subscribing", "bucket", w.Mesh.kv.Bucket())
				return
			}
			if e == nil {
				continue
			}
			b := nextBatch(e, updates)
			progress = true
			for _, ent := range b.Entries {
				seen = max(seen, ent.Revision)
				w.known[ent.Key] = ent.Revision
			}
			w.highest = max(w.highest, seen)
			if w.rollups {
				audit.start() // this batch may hold a rollup
			}
			if !send(ctx, out, b) {
				return
			}
		}
	}
}

// auditDelay is how long after a purge request or an update on a stream that
// allows rollups the watcher looks at the stream: the server has carried
// the request out by then. auditTries bounds the looks while the watch has
// not yet delivered what the stream holds.
const (
	auditDelay = 250 * time.Millisecond
	auditTries = 8
)

// audit is a pending look at the stream, at most one at a time.
type audit struct {
	timer *time.Timer
	tries int
}

func (a *audit) start() {
	if a.timer == nil {
		a.timer, a.tries = time.NewTimer(auditDelay), 0
	}
}

// again schedules another look, unless the tries are used up.
func (a *audit) again() {
	a.stop()
	if a.tries++; a.tries < auditTries {
		a.timer = time.NewTimer(auditDelay)
	}
}

func (a *audit) stop() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
}

func (a *audit) due() <-chan time.Time {
	if a.timer == nil {
		return nil
	}
	return a.timer.C
}

// audited is one look at the stream for messages removed without an event.
// It reports true when the bucket must be read again.
func (w *Watcher) audited(ctx context.Context, seen uint64, a *audit) bool {
	tries := a.tries
	a.timer = nil
	info, ok := w.streamInfo(ctx)
	if !ok {
		return false
	}
	switch w.removed(info, seen) {
	case removalUndecided:
		a.tries = tries
		a.again()
	case removalFound:
		return true
	}
	return false
}

type removal int

const (
	removalNone      removal = iota
	removalUndecided         // the watch has not delivered all the stream holds yet
	removalFound
)

// removed compares the stream's state with what the watch delivered. Once
// the watch has delivered the stream's last message, every key it knows has
// its message in the stream — a KV keeps one per key, a delete a marker —
// unless a purge, a rollup or a deletion through the stream's API removed
// it, and those are no watch events. The watch's state is then short of the
// bucket's (a host whose record is gone, a revocation lost), and only a
// fresh snapshot shows it.
func (w *Watcher) removed(info *jetstream.StreamInfo, seen uint64) removal {
	st := info.State
	if st.LastSeq > seen {
		return removalUndecided
	}
	oldest := uint64(0)
	for _, rev := range w.known {
		if oldest == 0 || rev < oldest {
			oldest = rev
		}
	}
	if st.Msgs >= uint64(len(w.known)) && (oldest == 0 || oldest >= st.FirstSeq) {
		return removalNone
	}
	w.Log.Warn("messages were removed from the bucket without watch events (a purge or a rollup); reading it again",
		"bucket", w.Mesh.kv.Bucket(), "stream_messages", st.Msgs, "keys_known", len(w.known), "first_sequence", st.FirstSeq)
	return removalFound
}

// streamInfo reads the bucket's stream, noting its settings; ok is false
// when it cannot be read (NATS trouble is the connection's to report; a
// missing bucket is handed to Missing).
func (w *Watcher) streamInfo(ctx context.Context) (*jetstream.StreamInfo, bool) {
	if w.Connected != nil && !w.Connected() {
		return nil, false
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := w.Mesh.kv.Status(pctx)
	if isMissing(err) {
		w.Log.Warn("the bucket is gone; the device keeps its peers", "bucket", w.Mesh.kv.Bucket())
		w.missing()
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return nil, false
	}
	info := bs.StreamInfo()
	w.noteSettings(info.Config)
	return info, true
}

func (w *Watcher) noteSettings(cfg jetstream.StreamConfig) {
	w.rollups = cfg.AllowRollup
	w.republished = republishes(cfg, w.Mesh.kv.Bucket())
	if w.Settings != nil {
		w.Settings(Problems(cfg))
	}
}

// nextBatch is e plus whatever else is already queued: a burst becomes one
// batch.
func nextBatch(e jetstream.KeyValueEntry, updates <-chan jetstream.KeyValueEntry) peer.Batch {
	b := peer.Batch{Entries: []peer.Write{toEntry(e)}}
	for len(b.Entries) < maxBatch {
		select {
		case e, open := <-updates:
			if !open {
				return b
			}
			if e != nil {
				b.Entries = append(b.Entries, toEntry(e))
			}
		default:
			return b
		}
	}
	return b
}

// probeTimeout bounds one stream-info request of a probe.
const probeTimeout = 5 * time.Second

// snapshotIdle is the default Watcher.SnapshotIdle. A snapshot's entries
// come back to back (10,000 records in well under a second), so a pause
// this long is a consumer that is gone, not a slow one.
const snapshotIdle = 3 * time.Second

// stalled is one probe. The watch is stalled when a sequence the stream held
// at the previous probe is still beyond what the watch delivered, and nothing
// at all arrived in between: a whole probe period for an update that
// normally arrives in milliseconds. (A watch that delivers, only slowly, is
// busy, not lost.) A probe also finds the bucket made again, and messages
// removed without an event (removed).
func (w *Watcher) stalled(ctx context.Context, seen uint64, progress bool, suspect *uint64) bool {
	if w.Connected != nil && !w.Connected() {
		*suspect = 0 // the reconnect kick re-reads the bucket anyway
		return false
	}
	if *suspect > seen && !progress && *suspect != w.stallRestart {
		w.Log.Warn("watch fell behind the bucket (its consumer is gone); re-reading it",
			"bucket", w.Mesh.kv.Bucket(), "delivered", seen, "stream_sequence", *suspect)
		w.stallRestart = *suspect
		return true
	}
	info, ok := w.streamInfo(ctx)
	if !ok {
		return false
	}
	if w.recreated(info) {
		return true
	}
	if w.removed(info, seen) == removalFound {
		return true
	}
	*suspect = 0
	if last := info.State.LastSeq; last > seen {
		*suspect = last
	}
	return false
}

// drainTimeout bounds how long an abandoned watch is read after Stop.
const drainTimeout = time.Minute

// stopWatch ends a watch and reads what nats.go still delivers to it until it
// closes the channel. nats.go's delivery goroutine blocks on a full updates
// channel; without a reader it would stay blocked, holding the watch's
// buffered messages, for the life of the process, once per abandoned watch.
func stopWatch(kw jetstream.KeyWatcher) {
	updates := kw.Updates()
	go func() {
		timeout := time.NewTimer(drainTimeout)
		defer timeout.Stop()
		for {
			select {
			case _, open := <-updates:
				if !open {
					return
				}
			case <-timeout.C:
				return
			}
		}
	}()
	// Stop also deletes the consumer on the server; with the connection
	// down that fails, and the server drops the consumer once it sees no
	// interest.
	_ = kw.Stop()
}

func (w *Watcher) missing() {
	if w.Missing != nil {
		w.Missing()
	}
}

// isMissing reports an error that means the bucket's stream does not exist.
func isMissing(err error) bool {
	// A watch is made through nats.go's older JetStream API (the KV watch
	// subscribes with it), whose error values are its own.
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, nats.ErrStreamNotFound)
}

func send(ctx context.Context, out chan<- peer.Batch, b peer.Batch) bool {
	select {
	case out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

func toEntry(e jetstream.KeyValueEntry) peer.Write {
	op := e.Operation()
	return peer.Write{Key: e.Key(), Revision: e.Revision(), Value: e.Value(),
		Deleted: op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge}
}
