package bucket

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/lossy"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// followedMesh is a Mesh on url whose bucket ikto-test (made as agents make
// it, republishing) is written through js.
func followedMesh(t *testing.T, url string) *Mesh {
	t.Helper()
	nc, js := natstest.Connect(t, url)
	c := &Conn{NC: nc, JS: js, nats: config.NATS{Bucket: "ikto-test"}}
	m, err := c.Open(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// view applies batches as the controller would: a snapshot replaces, an
// update overwrites; a deleted key is absent.
type view map[string]uint64

func (v view) apply(b peer.Batch) {
	if b.Snapshot {
		clear(v)
	}
	for _, e := range b.Entries {
		if e.Deleted {
			delete(v, e.Key)
			continue
		}
		v[e.Key] = e.Revision
	}
}

// bucketView is the bucket's content read directly: key → revision.
func bucketView(t *testing.T, m *Mesh) view {
	t.Helper()
	ctx, kv := context.Background(), m.kv
	v := view{}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		v[k] = e.Revision()
	}
	return v
}

// A bucket made by ikto republishes, and the watcher follows it with a
// subscription: the snapshot and every update arrive, and the stream holds
// no consumer for it.
func TestFollowHoldsNoConsumer(t *testing.T) {
	s := natstest.Start(t)
	m := followedMesh(t, s.URL())
	putRecords(t, m.kv, 1, 5)
	out := runWatcher(t, &Watcher{Mesh: m, Log: slog.New(slog.DiscardHandler)})
	got := view{}
	b := recv(t, out)
	if !b.Snapshot || len(b.Entries) != 5 {
		t.Fatalf("first batch: snapshot %v, %d entries; want a snapshot of 5", b.Snapshot, len(b.Entries))
	}
	got.apply(b)
	if n := consumers(t, m.JS, "ikto-test"); n != 0 {
		t.Errorf("the stream has %d consumers while the bucket is followed, want 0", n)
	}
	putRecords(t, m.kv, 6, 2)
	ctx := context.Background()
	key := peer.Key(netip.MustParsePrefix("fd10:1::/48"))
	if err := m.kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	want := bucketView(t, m)
	for !maps.Equal(got, want) {
		got.apply(recv(t, out))
	}
	if n := consumers(t, m.JS, "ikto-test"); n != 0 {
		t.Errorf("the stream has %d consumers after updates, want 0", n)
	}
}

// Republished messages are core NATS: a share of them is lost on the way
// (a proxy drops 30%), and so, in the second case, are 10% of the answers
// to the direct gets that read the bucket (as a reader too slow for its
// subscription loses them). The watcher finds the holes in the sequence,
// the lost last message and the breaks in a batch's answers, reads those
// ranges again, and ends with the bucket's content without reading the
// whole bucket again.
func TestFollowRepairsLostMessages(t *testing.T) {
	republished := lossy.Prefix("ikto.kv.", 0.3)
	for _, tc := range []struct {
		name string
		lose func(string) float64
	}{
		{"republished", republished},
		{"republished and read", func(s string) float64 {
			if strings.Contains(s, ".scan.") {
				return 0.1
			}
			return republished(s)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { followThroughLoss(t, tc.lose) })
	}
}

func followThroughLoss(t *testing.T, lose func(string) float64) {
	s := natstest.Start(t)
	writer := followedMesh(t, s.URL())
	putRecords(t, writer.kv, 1, 600)
	proxy, err := lossy.Start("127.0.0.1:0", s.Addr().String(), lose)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	m := followedMesh(t, proxy.URL())
	out := runWatcher(t, &Watcher{Mesh: m, Log: slog.New(slog.DiscardHandler), Probe: 100 * time.Millisecond})
	// A round of direct gets whose answers were all lost is asked again
	// only after answerTimeout (a busy server must not be asked twice):
	// with answers lost too, the bound is a few of those.
	bound := 20 * time.Second
	if lose(".scan.1") > 0 {
		bound = 60 * time.Second
	}
	got := view{}
	select {
	case b := <-out:
		got.apply(b)
	case <-time.After(testkit.Scaled(bound)):
		t.Fatalf("no snapshot within %s", bound)
	}

	ctx := context.Background()
	for round := range 10 {
		putRecords(t, writer.kv, 1+round*3, 30)
		key := peer.Key(netip.MustParsePrefix(fmt.Sprintf("fd10:%x::/48", 2+round*3)))
		if err := writer.kv.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	want := bucketView(t, writer)
	rereads := 0
	testkit.Eventually(t, bound, "the followed view to equal the bucket", func() error {
		for {
			select {
			case b := <-out:
				if b.Snapshot {
					rereads++
				}
				got.apply(b)
				continue
			default:
			}
			break
		}
		if d := cmp.Diff(map[string]uint64(want), map[string]uint64(got)); d != "" {
			return fmt.Errorf("followed view (-bucket +followed):\n%s", d)
		}
		return nil
	})
	if rereads > 0 {
		// The audit's safety net (keys older than the stream's first
		// message) would hide holes that were never read again.
		t.Errorf("the bucket was read again %d times; want every hole mended by reading only it", rereads)
	}
	if proxy.Dropped() == 0 {
		t.Fatalf("the proxy dropped nothing (%d passed): the test tested no loss", proxy.Passed())
	}
	t.Logf("the proxy dropped %d of %d messages", proxy.Dropped(), proxy.Dropped()+proxy.Passed())
	if n := consumers(t, writer.JS, "ikto-test"); n != 0 {
		t.Errorf("the stream has %d consumers after the repairs, want 0", n)
	}
}

// A reconnect loses what was republished meanwhile. The watcher catches up
// from where it was, reading only what it missed: no snapshot, and the
// stream holds no consumer.
func TestFollowCatchesUpAfterReconnect(t *testing.T) {
	s := natstest.Start(t)
	writer := followedMesh(t, s.URL())
	putRecords(t, writer.kv, 1, 50)
	proxy, err := lossy.Start("127.0.0.1:0", s.Addr().String(), func(string) float64 { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	m := followedMesh(t, proxy.URL())
	restart := make(chan struct{}, 1)
	var rereads atomic.Int32
	out := runWatcher(t, &Watcher{Mesh: m, Log: slog.New(slog.DiscardHandler), Restart: restart, Reread: func() { rereads.Add(1) }})
	got := view{}
	got.apply(recv(t, out))

	// Cut, write while the follower's connection is down, let it back.
	reconnected := make(chan struct{}, 1)
	m.NC.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
	proxy.Cut()
	putRecords(t, writer.kv, 40, 20)
	if err := writer.kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("fd10:2::/48"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect within 10s")
	}
	restart <- struct{}{}
	want := bucketView(t, writer)
	for !maps.Equal(got, want) {
		b := recv(t, out)
		if b.Snapshot {
			t.Fatal("the watcher read the whole bucket again after a reconnect to the same stream")
		}
		got.apply(b)
	}
	if rereads.Load() == 0 {
		t.Error("no range was read again, yet the watcher caught up")
	}
	if n := consumers(t, writer.JS, "ikto-test"); n != 0 {
		t.Errorf("the stream has %d consumers, want 0", n)
	}
}

// The follower's bookkeeping: a hole is a sequence below the highest seen
// that neither came nor was read again; a key takes only a newer message.
func TestFollowerFindsHoles(t *testing.T) {
	w := func(key string, seq uint64) peer.Write { return peer.Write{Key: key, Revision: seq} }
	f := newFollower(map[string]uint64{}, 2)
	for _, tc := range []struct {
		w          peer.Write
		news, hole bool
		contig     uint64
	}{
		{w("a", 3), true, false, 3},
		{w("b", 5), true, true, 3},   // 4 is missing
		{w("a", 6), true, true, 3},   // still
		{w("b", 4), false, false, 6}, // 4 came late, older than b's 5: no news, no hole
		{w("a", 6), false, false, 6}, // a duplicate
		{w("c", 9), true, true, 6},
	} {
		news := f.take(tc.w)
		if news != tc.news || f.hole() != tc.hole || f.contig != tc.contig {
			t.Fatalf("take(%s %d) = news %v, hole %v, contig %d; want %v, %v, %d",
				tc.w.Key, tc.w.Revision, news, f.hole(), f.contig, tc.news, tc.hole, tc.contig)
		}
	}
	f.readTo(8) // 7 and 8 were read again: superseded or gone
	if f.hole() || f.contig != 9 {
		t.Errorf("after reading 7-8 again: hole %v, contig %d; want none, 9", f.hole(), f.contig)
	}
}
