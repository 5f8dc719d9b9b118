package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// runWatcher runs w until the test ends and returns its batches.
func runWatcher(t *testing.T, w *Watcher) <-chan peer.Batch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan peer.Batch)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return out
}

func putRecords(t *testing.T, kv jetstream.KeyValue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := newRecord(t, fmt.Sprint("h", i), fmt.Sprintf("fd10:%x::/48", i))
		if _, err := kv.Put(context.Background(), peer.Key(netip.MustParsePrefix(r.AllowedIP)), r.Encode()); err != nil {
			t.Fatal(err)
		}
	}
}

// A kick drops the watch before the next one is made, so however often the
// agent reconnects the bucket's stream carries one consumer for it.
func TestWatcherHoldsOneWatchAcrossRestarts(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	kv, err := OpenBucket(ctx, js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	putRecords(t, kv, 1, 3)
	restart := make(chan struct{}, 1)
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Restart: restart, Backoff: retry.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond}})

	const kicks = 20
	for i := 0; i <= kicks; i++ {
		if b := recv(t, out); !b.Snapshot || len(b.Entries) != 3 {
			t.Fatalf("batch %d = %d entries, snapshot %v; want a snapshot of 3", i, len(b.Entries), b.Snapshot)
		}
		if n := consumers(t, js, kv.Bucket()); n != 1 {
			t.Fatalf("after %d restarts the bucket's stream has %d consumers, want 1", i, n)
		}
		if i < kicks {
			restart <- struct{}{}
		}
	}
}

func consumers(t *testing.T, js jetstream.JetStream, bucket string) int {
	t.Helper()
	st, err := js.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// A watch abandoned while nats.go is blocked handing it updates must not
// leave that delivery goroutine blocked for ever.
func TestWatcherLeavesNoDeliveryBlocked(t *testing.T) {
	kv := newBucket(t)
	restart := make(chan struct{}, 1)
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Restart: restart, Backoff: retry.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond}})
	recv(t, out)
	for round := range 4 {
		// More updates than the watch's channel holds, not read: the
		// delivery goroutine fills the channel and blocks; then the kick.
		putRecords(t, kv, 1000*(round+1), 600)
		restart <- struct{}{}
		for b := recv(t, out); !b.Snapshot; b = recv(t, out) {
		}
	}
	// Only the live watch may have a delivery in the callback; poll, since
	// an abandoned one unblocks when the drain reaches it.
	testkit.Eventually(t, 10*time.Second, "the stopped watches' deliveries to unblock", func() error {
		if n := blockedDeliveries(); n > 1 {
			return fmt.Errorf("%d watch deliveries still blocked after their watches were stopped", n)
		}
		return nil
	})
}

// blockedDeliveries counts goroutines stuck sending in a KV watch callback.
func blockedDeliveries() int {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "chan send") && strings.Contains(g, "WatchFiltered.func") {
			n++
		}
	}
	return n
}

// The agent kicks the watcher on every reconnect; a server restart (same
// port, same store) then costs one fresh snapshot, and later updates flow.
func TestWatcherFollowsAServerRestart(t *testing.T) {
	s := natstest.Start(t)
	restart := make(chan struct{}, 1)
	kick := func(*nats.Conn) {
		select {
		case restart <- struct{}{}:
		default:
		}
	}
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectHandler(kick))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := OpenBucket(context.Background(), js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	putRecords(t, kv, 1, 2)
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Restart: restart})
	if b := recv(t, out); len(b.Entries) != 2 {
		t.Fatalf("first snapshot has %d entries, want 2", len(b.Entries))
	}

	for range 2 {
		s.Shutdown()
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if b := recv(t, out); !b.Snapshot || len(b.Entries) != 2 {
			t.Fatalf("after a server restart: %+v, want a snapshot of 2", b)
		}
	}
	putRecords(t, kv, 3, 1)
	if b := recv(t, out); b.Snapshot || len(b.Entries) != 1 {
		t.Fatalf("update after the restarts = %+v, want the new record", b)
	}
}

// countingKV counts WatchAll calls on a real bucket.
type countingKV struct {
	jetstream.KeyValue
	mu    sync.Mutex
	calls []time.Time
}

func (c *countingKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	c.mu.Lock()
	c.calls = append(c.calls, time.Now())
	c.mu.Unlock()
	return c.KeyValue.WatchAll(ctx, opts...)
}

func (c *countingKV) attempts() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.calls...)
}

// When nats.go gives up on a connection it closes the watch's channel; a
// watcher that re-reads a closed channel or re-watches at once would spin.
// This one backs off, doubling, until it is stopped.
func TestWatcherBacksOffOnAClosedConnection(t *testing.T) {
	s := natstest.Start(t)
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	real, err := OpenBucket(context.Background(), js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	kv := &countingKV{KeyValue: real}
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Backoff: retry.Policy{Min: 20 * time.Millisecond, Max: 160 * time.Millisecond}})
	recv(t, out)
	nc.Close()

	const want = 6
	testkit.Eventually(t, 10*time.Second, "watch attempts after the connection closed", func() error {
		if n := len(kv.attempts()); n < want+1 {
			return fmt.Errorf("only %d watch attempts; the watcher gave up", n)
		}
		return nil
	})
	// Attempts 2..7 follow delays of at least 10, 20, 40, 80, 80 ms (half
	// of each doubling backoff): a spin would make them microseconds apart.
	calls := kv.attempts()
	if took := calls[want].Sub(calls[1]); took < 230*time.Millisecond {
		t.Fatalf("%d watch attempts within %s on a closed connection: not backing off", want, took)
	}
}

// stallingKV hands out real watches, but the first one goes through stall:
// it stops delivering, as a watch does whose consumer lived on a cluster
// member that went away while the client's own connection stayed up.
type stallingKV struct {
	jetstream.KeyValue
	stall   func(jetstream.KeyWatcher) jetstream.KeyWatcher
	mu      sync.Mutex
	watches int
}

func (s *stallingKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return s.first(s.KeyValue.WatchAll(ctx, opts...))
}

func (s *stallingKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return s.first(s.KeyValue.Watch(ctx, keys, opts...))
}

// first hands the first watch through stall, and every later one as it is.
func (s *stallingKV) first(kw jetstream.KeyWatcher, err error) (jetstream.KeyWatcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches++
	if err != nil || s.watches > 1 {
		return kw, err
	}
	return s.stall(kw), nil
}

// A scan whose entries never come is made again, not waited on until the
// caller's deadline (ikto-admin list, health and prune).
func TestScanStartsAgainWhenItsEntriesStop(t *testing.T) {
	real := newBucket(t)
	putRecords(t, real, 1, 3)
	kv := &stallingKV{KeyValue: real, stall: newSilentWatch}
	ctx, cancel := context.WithTimeout(context.Background(), 3*snapshotIdle)
	defer cancel()
	entries, err := Scan(ctx, kv, "peers.>")
	if err != nil || len(entries) != 3 {
		t.Fatalf("Scan = %d entries, %v; want 3 from a second consumer", len(entries), err)
	}
	if kv.watches != 2 {
		t.Errorf("%d watches made, want 2", kv.watches)
	}
}

// mutedWatch forwards the first entries of a real watch and then nothing:
// its snapshot (a watch whose consumer lived on a cluster member that went
// away), part of it (a snapshot that stops), or nothing at all (a consumer
// made on a server still recovering).
type mutedWatch struct {
	jetstream.KeyWatcher
	out chan jetstream.KeyValueEntry
}

func newStalledWatch(kw jetstream.KeyWatcher) jetstream.KeyWatcher { return mute(kw, -1) }
func newSilentWatch(kw jetstream.KeyWatcher) jetstream.KeyWatcher  { return mute(kw, 0) }
func newCutSnapshot(kw jetstream.KeyWatcher) jetstream.KeyWatcher  { return mute(kw, 1) }

// mute forwards the first n entries of kw, never past the snapshot's end
// marker; n < 0 forwards the whole snapshot, marker included.
func mute(kw jetstream.KeyWatcher, n int) jetstream.KeyWatcher {
	s := &mutedWatch{KeyWatcher: kw, out: make(chan jetstream.KeyValueEntry, 256)}
	go func() {
		defer close(s.out)
		for e := range kw.Updates() {
			if n == 0 {
				break
			}
			s.out <- e
			n--
			if e == nil {
				break
			}
		}
		for range kw.Updates() { // swallow the rest until Stop closes it
		}
	}()
	return s
}

func (s *mutedWatch) Updates() <-chan jetstream.KeyValueEntry { return s.out }

func TestWatcherProbeRestartsAStalledWatch(t *testing.T) {
	real := newBucket(t)
	putRecords(t, real, 1, 2)
	kv := &stallingKV{KeyValue: real, stall: newStalledWatch}
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Probe: 50 * time.Millisecond, Backoff: retry.Policy{Min: time.Millisecond, Max: WatchPolicy.Max}})
	if b := recv(t, out); !b.Snapshot || len(b.Entries) != 2 {
		t.Fatalf("first batch = %+v, want a snapshot of 2", b)
	}
	// The stalled watch never delivers this; only a fresh watch can.
	putRecords(t, real, 3, 1)
	b := recv(t, out)
	if !b.Snapshot || len(b.Entries) != 3 {
		t.Fatalf("after the stall = %+v, want a fresh snapshot of 3", b)
	}
	// The fresh watch is healthy: updates flow and the probe leaves it be.
	putRecords(t, real, 4, 1)
	if b := recv(t, out); b.Snapshot || len(b.Entries) != 1 {
		t.Fatalf("update on the fresh watch = %+v, want one entry", b)
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.watches != 2 {
		t.Fatalf("%d watches, want 2: one stalled, one fresh", kv.watches)
	}
}

// TestWatcherCarriesAMarkersBody: a delete marker's body (a signed
// command) comes with the marker, in an update and in a snapshot; a plain
// delete has none.
func TestWatcherCarriesAMarkersBody(t *testing.T) {
	js, kv := newBucketJS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	own := newRecord(t, "alpha", "fd10:1::/48")
	key := peer.Key(netip.MustParsePrefix(own.AllowedIP))
	rev := mustClaim(t, ctx, kv, own)
	restart := make(chan struct{}, 1)
	out := make(chan peer.Batch)
	w := &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Restart: restart,
		Backoff: retry.Policy{Min: time.Millisecond, Max: WatchPolicy.Max}}
	go func() { _ = w.Run(ctx, out) }()
	recv(t, out)

	cmd := peer.Command{PublicKey: own.PublicKey, Seq: 7, Signer: own.PublicKey, Sig: "c2ln"}
	if err := DeleteCommand(ctx, js, kv.Bucket(), key, rev+1, cmd); err == nil {
		t.Fatal("DeleteCommand on a revision the key is not at succeeded")
	}
	if err := DeleteCommand(ctx, js, kv.Bucket(), key, rev, cmd); err != nil {
		t.Fatal(err)
	}
	want := string(cmd.Encode())
	if b := recv(t, out); len(b.Entries) != 1 || !b.Entries[0].Deleted || string(b.Entries[0].Value) != want {
		t.Fatalf("after a command's marker: %+v, want one marker with the command", b)
	}
	restart <- struct{}{}
	if b := recv(t, out); !b.Snapshot || len(b.Entries) != 1 || string(b.Entries[0].Value) != want {
		t.Fatalf("snapshot after a command's marker: %+v, want the marker with the command", b)
	}

	rev, err := kv.Create(ctx, key, own.Encode())
	if err != nil {
		t.Fatal(err)
	}
	recv(t, out)
	if err := Delete(ctx, kv, key, rev); err != nil {
		t.Fatal(err)
	}
	if b := recv(t, out); len(b.Entries) != 1 || !b.Entries[0].Deleted || len(b.Entries[0].Value) != 0 {
		t.Fatalf("after a plain delete: %+v, want a marker without a body", b)
	}
}

func TestJudgeSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name                string
		known               bool
		last, seen, highest uint64
		entries             int
		want                snapshotVerdict
	}{
		{"first snapshot", true, 10, 10, 0, 3, snapshotCurrent},
		{"caught up", true, 12, 12, 10, 3, snapshotCurrent},
		{"a member behind", true, 12, 8, 10, 3, snapshotBehind},
		// The stream's leader could not be asked: a snapshot behind what
		// was applied is not believed either (the cluster soak saw an
		// evicted host put back by one).
		{"a member behind, stream unknown", false, 0, 8, 10, 3, snapshotBehind},
		{"the stream restored from a backup", true, 6, 6, 10, 3, snapshotRestored},
		{"an empty bucket", false, 0, 0, 10, 0, snapshotCurrent},
	} {
		if got := judgeSnapshot(tc.known, tc.last, tc.seen, tc.highest, tc.entries); got != tc.want {
			t.Errorf("%s: judgeSnapshot = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestWatcherRetriesASnapshotThatStops(t *testing.T) {
	real := newBucket(t)
	putRecords(t, real, 1, 3)
	kv := &stallingKV{KeyValue: real, stall: newCutSnapshot}
	start := time.Now()
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), SnapshotIdle: 200 * time.Millisecond,
		Backoff: retry.Policy{Min: time.Millisecond, Max: WatchPolicy.Max}})
	b := recv(t, out)
	if !b.Snapshot || len(b.Entries) != 3 {
		t.Fatalf("first batch = %+v, want the whole snapshot of 3 (the cut one is never sent)", b)
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.watches != 2 {
		t.Fatalf("%d watches, want 2: one cut short, one whole", kv.watches)
	}
	t.Logf("snapshot read whole after %s (idle bound 200ms)", time.Since(start).Round(time.Millisecond))
}

// A bucket that is gone when the watch is made (a server that lost its
// store: no deletion advisory ever comes) is reported as missing, so the
// agent makes it again.
func TestWatcherReportsABucketGoneBeforeTheWatch(t *testing.T) {
	js, kv := newBucketJS(t)
	if err := js.DeleteKeyValue(context.Background(), kv.Bucket()); err != nil {
		t.Fatal(err)
	}
	missing := make(chan struct{}, 16)
	runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Backoff: retry.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond},
		Missing: func() { missing <- struct{}{} }})
	select {
	case <-missing:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher did not report the missing bucket")
	}
}
