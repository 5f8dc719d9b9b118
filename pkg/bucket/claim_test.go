package bucket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

func newBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, kv := newBucketJS(t)
	return kv
}

// newBucketJS is newBucket with the JetStream context it was made with.
func newBucketJS(t *testing.T) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	if _, err := OpenBucket(ctx, js, "ikto-test", false, 0); !errors.Is(err, ErrBucketMissing) {
		t.Fatalf("OpenBucket without create = %v, want ErrBucketMissing", err)
	}
	kv, err := OpenBucket(ctx, js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBucket(ctx, js, "ikto-test", true, 0); err != nil {
		t.Fatalf("opening an existing bucket: %v", err)
	}
	return js, kv
}

func newRecord(t testing.TB, name, prefix string) peer.Record {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return peer.Record{Name: name, PublicKey: k.PublicKey().String(), AdvertiseAddress: "198.18.0.2", AllowedIP: prefix, WGPort: 51820}
}

func TestClaimRaceExactlyOneWins(t *testing.T) {
	kv := newBucket(t)
	const racers = 20
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		winners, inUse int
		others         []error
		start          = make(chan struct{})
		recs           = make([]peer.Record, racers)
	)
	for i := range recs {
		recs[i] = newRecord(t, fmt.Sprintf("racer-%d", i), "fd10:2082:5bc1::/48")
	}
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := Claim(context.Background(), kv, recs[i])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners++
			case errors.Is(err, ErrAddressInUse):
				inUse++
			default:
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if winners != 1 || inUse != racers-1 || len(others) != 0 {
		t.Fatalf("winners=%d inUse=%d others=%v; want 1, %d, none", winners, inUse, others, racers-1)
	}
	// The stored record is the winner's, whole.
	e, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix("fd10:2082:5bc1::/48")))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range recs {
		found = found || string(e.Value()) == string(r.Encode())
	}
	if !found {
		t.Fatalf("stored value %s is no racer's record", e.Value())
	}
}

func TestClaimInUseNamesHolder(t *testing.T) {
	kv := newBucket(t)
	holder := newRecord(t, "alpha", "fd10:1::/48")
	if _, err := Claim(context.Background(), kv, holder); err != nil {
		t.Fatal(err)
	}
	_, err := Claim(context.Background(), kv, newRecord(t, "beta", "fd10:1::/48"))
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Holder.Name != "alpha" || inUse.Prefix.String() != "fd10:1::/48" {
		t.Fatalf("err = %v, want InUseError naming alpha and fd10:1::/48", err)
	}
}

func TestClaimSameKeyRefreshes(t *testing.T) {
	kv := newBucket(t)
	rec := newRecord(t, "alpha", "fd10:1::/48")
	rev1, err := Claim(context.Background(), kv, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.AdvertiseAddress = "198.18.0.77" // the host moved, then restarted
	rev2, err := Claim(context.Background(), kv, rec)
	if err != nil {
		t.Fatalf("re-claim with the same key: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("revision %d after re-claim, want > %d", rev2, rev1)
	}
	e, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48")))
	if err != nil || string(e.Value()) != string(rec.Encode()) {
		t.Fatalf("stored %s (%v), want refreshed record %s", e.Value(), err, rec.Encode())
	}
}

// ClaimKeep with the same record writes nothing: a copy of the key under
// another prefix stays the newer record, which never keeps the key (§4).
func TestClaimKeepLeavesAnUnchangedRecord(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	rec := newRecord(t, "alpha", "fd10:1::/48")
	rev1, err := Claim(ctx, kv, rec)
	if err != nil {
		t.Fatal(err)
	}
	planted := rec
	planted.AllowedIP = "fd10:2::/48"
	if _, err := kv.Put(ctx, peer.Key(netip.MustParsePrefix(planted.AllowedIP)), planted.Encode()); err != nil {
		t.Fatal(err)
	}
	rev2, err := ClaimKeep(ctx, kv, rec)
	if err != nil || rev2 != rev1 {
		t.Fatalf("re-claim of an unchanged record = %d, %v; want revision %d untouched", rev2, err, rev1)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bs := st.(*jetstream.KeyValueBucketStatus); bs.StreamInfo().State.LastSeq != rev1+1 {
		t.Errorf("the stream's last sequence is %d, want %d: the re-claim wrote", bs.StreamInfo().State.LastSeq, rev1+1)
	}
}

func TestClaimAfterDelete(t *testing.T) {
	kv := newBucket(t)
	a := newRecord(t, "alpha", "fd10:1::/48")
	rev, err := Claim(context.Background(), kv, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := Delete(context.Background(), kv, peer.Key(netip.MustParsePrefix(a.AllowedIP)), rev+5); err == nil {
		t.Fatal("Delete with a stale revision succeeded")
	}
	if err := Delete(context.Background(), kv, peer.Key(netip.MustParsePrefix(a.AllowedIP)), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(context.Background(), kv, newRecord(t, "beta", a.AllowedIP)); err != nil {
		t.Fatalf("claim of a freed prefix: %v", err)
	}
}

func TestClaimNeverOverwritesGarbage(t *testing.T) {
	kv := newBucket(t)
	key := peer.Key(netip.MustParsePrefix("fd10:1::/48"))
	if _, err := kv.Put(context.Background(), key, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(context.Background(), kv, newRecord(t, "alpha", "fd10:1::/48")); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("claim over an unreadable record = %v, want ErrAddressInUse", err)
	}
}

// recv waits for the next batch.
func recv(t *testing.T, ch <-chan Batch) Batch {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no batch within 10s")
		return Batch{}
	}
}

func TestWatchSnapshotThenUpdatesThenRestart(t *testing.T) {
	kv := newBucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newRecord(t, "alpha", "fd10:1::/48")
	b := newRecord(t, "beta", "fd10:2::/48")
	if _, err := Claim(ctx, kv, a); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(ctx, kv, b); err != nil {
		t.Fatal(err)
	}
	// A deleted key appears in a snapshot only as its marker: a delete on a
	// host's own key is a command, a key never written is not.
	if err := kv.Delete(ctx, peer.Key(netip.MustParsePrefix(b.AllowedIP))); err != nil {
		t.Fatal(err)
	}
	restart := make(chan struct{}, 1)
	out := make(chan Batch)
	w := &Watcher{KV: kv, Log: slog.New(slog.DiscardHandler), Restart: restart, Backoff: retry.Policy{Min: time.Millisecond, Max: WatchPolicy.Max}}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()

	snap := recv(t, out)
	if !snap.Snapshot || len(snap.Entries) != 2 || snap.Entries[0].Key != peer.Key(netip.MustParsePrefix(a.AllowedIP)) || snap.Entries[0].Deleted ||
		snap.Entries[1].Key != peer.Key(netip.MustParsePrefix(b.AllowedIP)) || !snap.Entries[1].Deleted || len(snap.Entries[1].Value) != 0 {
		t.Fatalf("first batch = %+v, want a snapshot of alpha and bravo's delete marker", snap)
	}
	c := newRecord(t, "gamma", "fd10:3::/48")
	if _, err := Claim(ctx, kv, c); err != nil {
		t.Fatal(err)
	}
	up := recv(t, out)
	if up.Snapshot || len(up.Entries) != 1 || up.Entries[0].Deleted || string(up.Entries[0].Value) != string(c.Encode()) {
		t.Fatalf("update = %+v, want gamma's put", up)
	}
	if err := kv.Delete(ctx, peer.Key(netip.MustParsePrefix(c.AllowedIP))); err != nil {
		t.Fatal(err)
	}
	if up := recv(t, out); len(up.Entries) != 1 || !up.Entries[0].Deleted {
		t.Fatalf("update = %+v, want gamma's delete", up)
	}
	restart <- struct{}{}
	if again := recv(t, out); !again.Snapshot || len(again.Entries) != 3 || again.Entries[0].Deleted {
		t.Fatalf("after restart = %+v, want a fresh snapshot of alpha and two markers", again)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// TestReleaseCopiesNoLiveHostDefends writes copies of alpha's key at five
// prefixes before alpha claims: a free one, one whose host is live (fresh
// heartbeat), one whose host moved on (a newer heartbeat of its key
// elsewhere), one whose host has been silent too long, one whose host was
// evicted (its key revoked) a moment ago. Releasing deletes every copy but
// the one the live host will restore, each with a marker that says it was a
// release; an ordinary delete's marker does not.
func TestReleaseCopiesNoLiveHostDefends(t *testing.T) {
	js, kv := newBucketJS(t)
	ctx := context.Background()
	live, err := OpenLiveBucket(ctx, js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	alpha := newRecord(t, "alpha", "fd10:a::/48")
	var (
		free    = netip.MustParsePrefix("fd10:1::/48")
		held    = netip.MustParsePrefix("fd10:2::/48")
		left    = netip.MustParsePrefix("fd10:3::/48")
		silent  = netip.MustParsePrefix("fd10:4::/48")
		movedTo = netip.MustParsePrefix("fd10:5::/48")
		evicted = netip.MustParsePrefix("fd10:6::/48")
	)
	now := time.Now()
	bravo, charlie, delta := newRecord(t, "bravo", held.String()), newRecord(t, "charlie", left.String()), newRecord(t, "delta", silent.String())
	echo := newRecord(t, "echo", evicted.String())
	echoKey, err := wgtypes.ParseKey(echo.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := Revoke(ctx, kv, echoKey, echo, now); err != nil {
		t.Fatal(err)
	}
	for p, hb := range map[netip.Prefix]Heartbeat{
		evicted: {PublicKey: echo.PublicKey, Name: "echo", At: now},
		held:    {PublicKey: bravo.PublicKey, Name: "bravo", At: now},
		left:    {PublicKey: charlie.PublicKey, Name: "charlie", At: now.Add(-5 * time.Second)},
		movedTo: {PublicKey: charlie.PublicKey, Name: "charlie", At: now},
		silent:  {PublicKey: delta.PublicKey, Name: "delta", At: now.Add(-LiveHoldAge - time.Second)},
	} {
		if err := PutHeartbeat(ctx, live, p, hb); err != nil {
			t.Fatal(err)
		}
	}
	copyAt := func(p netip.Prefix) []byte {
		c := alpha
		c.AllowedIP = p.String()
		return c.Encode()
	}
	for _, p := range []netip.Prefix{free, held, left, silent, evicted} {
		if _, err := kv.Put(ctx, peer.Key(p), copyAt(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Claim(ctx, kv, alpha); err != nil {
		t.Fatal(err)
	}
	copies, err := FindCopies(ctx, kv, alpha)
	if err != nil || len(copies) != 5 {
		t.Fatalf("FindCopies = %+v, %v; want the 5 copies", copies, err)
	}
	for _, c := range copies {
		if !c.Leftover(alpha) {
			t.Errorf("copy at %s is alpha's record under another prefix, yet not a leftover", c.Key)
		}
	}
	n, err := ReleaseCopies(ctx, js, kv, live, alpha, copies)
	if err != nil || n != 4 {
		t.Fatalf("ReleaseCopies = %d, %v; want 4 released", n, err)
	}
	for p, want := range map[netip.Prefix]bool{free: false, held: true, left: false, silent: false, evicted: false} {
		_, err := kv.Get(ctx, peer.Key(p))
		if got := err == nil; got != want {
			t.Errorf("copy at %s kept = %v (%v), want %v", p, got, err, want)
		}
	}
	markers := map[string]uint64{}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if e.Operation() == jetstream.KeyValueDelete {
			markers[e.Key()] = e.Revision()
		}
	}
	_ = w.Stop()
	// Newest copy first, the oldest (which every agent routes) last.
	if !(markers[peer.Key(silent)] < markers[peer.Key(left)] && markers[peer.Key(left)] < markers[peer.Key(free)]) {
		t.Errorf("release markers at revisions free %d, left %d, silent %d: want the copies released newest first",
			markers[peer.Key(free)], markers[peer.Key(left)], markers[peer.Key(silent)])
	}
	for _, p := range []netip.Prefix{free, left, silent} {
		rev, ok := markers[peer.Key(p)]
		if !ok {
			t.Fatalf("no delete marker at %s", p)
		}
		if released, err := Released(ctx, js, kv.Bucket(), peer.Key(p), rev); err != nil || !released {
			t.Errorf("Released(%s) = %v, %v; want true", p, released, err)
		}
	}

	// An ordinary delete (what ikto-admin evict writes) is no release.
	rev, err := kv.Put(ctx, peer.Key(free), copyAt(free))
	if err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, kv, peer.Key(free), rev); err != nil {
		t.Fatal(err)
	}
	if released, err := Released(ctx, js, kv.Bucket(), peer.Key(free), rev+1); err != nil || released {
		t.Errorf("Released after an ordinary delete = %v, %v; want false", released, err)
	}
	// Without the heartbeat bucket, every copy goes.
	copies, err = FindCopies(ctx, kv, alpha)
	if err != nil || len(copies) != 1 {
		t.Fatalf("FindCopies = %+v, %v; want the copy at %s", copies, err, held)
	}
	if n, err := ReleaseCopies(ctx, js, kv, nil, alpha, copies); err != nil || n != 1 {
		t.Errorf("ReleaseCopies without heartbeats = %d, %v; want the copy at %s released", n, err, held)
	}
}

func TestCopyLeftoverIsThisHostsOwnRecord(t *testing.T) {
	rec := newRecord(t, "alpha", "fd10:a::/48")
	moved := rec
	moved.AllowedIP = "fd10:1::/48"
	if !(Copy{Record: moved}).Leftover(rec) {
		t.Error("alpha's record under another prefix is not a leftover")
	}
	for name, change := range map[string]func(*peer.Record){
		"another name":    func(r *peer.Record) { r.Name = "mallory" },
		"another address": func(r *peer.Record) { r.AdvertiseAddress = "198.18.0.250" },
		"another port":    func(r *peer.Record) { r.WGPort = 51821 },
	} {
		c := moved
		change(&c)
		if (Copy{Record: c}).Leftover(rec) {
			t.Errorf("a copy with %s counts as a leftover", name)
		}
	}
}
