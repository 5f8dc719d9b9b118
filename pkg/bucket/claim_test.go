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

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
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

// newLiveBucketJS is newBucketJS with the heartbeat bucket made too.
func newLiveBucketJS(t *testing.T) (js jetstream.JetStream, kv, live jetstream.KeyValue) {
	t.Helper()
	js, kv = newBucketJS(t)
	live, err := OpenLiveBucket(context.Background(), js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	return js, kv, live
}

func newRecord(t testing.TB, name, prefix string) peer.Record {
	k := wgtest.PrivateKey(t)
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
			_, err := claimOf(context.Background(), kv, recs[i])
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
	mustClaim(t, context.Background(), kv, holder)
	_, err := claimOf(context.Background(), kv, newRecord(t, "beta", "fd10:1::/48"))
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Holder.Name != "alpha" || inUse.Prefix.String() != "fd10:1::/48" {
		t.Fatalf("err = %v, want InUseError naming alpha and fd10:1::/48", err)
	}
}

func TestClaimSameKeyRefreshes(t *testing.T) {
	kv := newBucket(t)
	rec := newRecord(t, "alpha", "fd10:1::/48")
	rev1 := mustClaim(t, context.Background(), kv, rec)
	rec.AdvertiseAddress = "198.18.0.77" // the host moved, then restarted
	rev2, err := claimOf(context.Background(), kv, rec)
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

func TestClaimAfterDelete(t *testing.T) {
	kv := newBucket(t)
	a := newRecord(t, "alpha", "fd10:1::/48")
	rev := mustClaim(t, context.Background(), kv, a)
	if err := Delete(context.Background(), kv, peer.Key(netip.MustParsePrefix(a.AllowedIP)), rev+5); err == nil {
		t.Fatal("Delete with a stale revision succeeded")
	}
	if err := Delete(context.Background(), kv, peer.Key(netip.MustParsePrefix(a.AllowedIP)), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := claimOf(context.Background(), kv, newRecord(t, "beta", a.AllowedIP)); err != nil {
		t.Fatalf("claim of a freed prefix: %v", err)
	}
}

func TestClaimNeverOverwritesGarbage(t *testing.T) {
	kv := newBucket(t)
	key := peer.Key(netip.MustParsePrefix("fd10:1::/48"))
	if _, err := kv.Put(context.Background(), key, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := claimOf(context.Background(), kv, newRecord(t, "alpha", "fd10:1::/48")); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("claim over an unreadable record = %v, want ErrAddressInUse", err)
	}
}

// recv waits for the next batch.
func recv(t *testing.T, ch <-chan peer.Batch) peer.Batch {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no batch within 10s")
		return peer.Batch{}
	}
}

func TestWatchSnapshotThenUpdatesThenRestart(t *testing.T) {
	kv := newBucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newRecord(t, "alpha", "fd10:1::/48")
	b := newRecord(t, "beta", "fd10:2::/48")
	mustClaim(t, ctx, kv, a)
	mustClaim(t, ctx, kv, b)
	// A deleted key appears in a snapshot only as its marker: a delete on a
	// host's own key is a command, a key never written is not.
	if err := kv.Delete(ctx, peer.Key(netip.MustParsePrefix(b.AllowedIP))); err != nil {
		t.Fatal(err)
	}
	restart := make(chan struct{}, 1)
	out := make(chan peer.Batch)
	w := &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Restart: restart, Backoff: retry.Policy{Min: time.Millisecond, Max: WatchPolicy.Max}}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()

	snap := recv(t, out)
	if !snap.Snapshot || len(snap.Entries) != 2 || snap.Entries[0].Key != peer.Key(netip.MustParsePrefix(a.AllowedIP)) || snap.Entries[0].Deleted ||
		snap.Entries[1].Key != peer.Key(netip.MustParsePrefix(b.AllowedIP)) || !snap.Entries[1].Deleted || len(snap.Entries[1].Value) != 0 {
		t.Fatalf("first batch = %+v, want a snapshot of alpha and bravo's delete marker", snap)
	}
	c := newRecord(t, "gamma", "fd10:3::/48")
	mustClaim(t, ctx, kv, c)
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

// claimOf is Claim without signing, returning the revision only.
// mustClaim claims rec's prefix in kv for a test that needs the claim made,
// and returns the record's revision.
func mustClaim(t *testing.T, ctx context.Context, kv jetstream.KeyValue, rec peer.Record) uint64 {
	t.Helper()
	rev, err := claimOf(ctx, kv, rec)
	if err != nil {
		t.Fatalf("claim %s: %v", rec.AllowedIP, err)
	}
	return rev
}

func claimOf(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) (uint64, error) {
	_, rev, err := Claim(ctx, kv, rec, nil)
	return rev, err
}
