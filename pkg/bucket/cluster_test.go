package bucket

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// startCluster runs a 3-server JetStream cluster on 127.0.0.1 with random
// ports and temporary stores, and returns its client URLs.
func startCluster(t *testing.T) string {
	t.Helper()
	return natstest.Cluster(t, natsserver.ClusterOptions{}).URL()
}

// openReplicated creates the R3 bucket, retrying while the cluster elects
// its leaders.
func openReplicated(t *testing.T, url string) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, url)
	deadline := time.Now().Add(30 * time.Second)
	var kv jetstream.KeyValue
	testkit.EventuallyContext(t, time.Until(deadline), "the R3 bucket", func(ctx context.Context) (err error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		kv, err = OpenBucket(ctx, js, "ikto-test", true, 3)
		return err
	})
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 3 {
		t.Fatalf("bucket has %d replicas, want 3", r)
	}
	// A new R3 stream answers reads (direct get) only once its replicas
	// are up; until then a Get has no responders, which the agent retries
	// and these tests must not race.
	testkit.EventuallyContext(t, time.Until(deadline), "the R3 bucket to answer reads", func(ctx context.Context) error {
		if _, err := kv.Get(ctx, "peers.probe"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("R3 bucket does not answer reads: %v", err)
		}
		return nil
	})
	return kv
}

// On a replicated bucket a lost compare-and-set has its own error code; the
// claim must still see it as "someone else wrote first", never as a failure.
func TestClaimOnAReplicatedBucket(t *testing.T) {
	kv := openReplicated(t, startCluster(t))
	ctx := context.Background()
	const racers = 8

	// Different keys racing for one prefix: exactly one wins.
	var recs []peer.Record
	for i := range racers {
		recs = append(recs, newRecord(t, fmt.Sprint("racer-", i), "fd10:1::/48"))
	}
	errs := race(racers, func(i int) error { _, err := claimOf(ctx, kv, recs[i]); return err })
	var won, inUse int
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrAddressInUse):
			inUse++
		default:
			t.Errorf("claim: %v", err)
		}
	}
	if won != 1 || inUse != racers-1 {
		t.Fatalf("%d won and %d were told in use, want 1 and %d", won, inUse, racers-1)
	}

	// One key refreshing its claim from a few places at once (an agent and
	// its restarted self): every Update that loses retries and wins. (Each
	// round of the race has one winner, so the racers stay well below the
	// claim's bound on rounds.)
	same := newRecord(t, "alpha", "fd10:2::/48")
	for i, err := range race(3, func(int) error { _, err := claimOf(ctx, kv, same); return err }) {
		if err != nil {
			t.Errorf("refresh %d of the same claim: %v", i, err)
		}
	}
	e, err := kv.Get(ctx, peer.Key(netip.MustParsePrefix(same.AllowedIP)))
	if err != nil || string(e.Value()) != string(same.Encode()) {
		t.Fatalf("stored %s (%v), want alpha's record", e.Value(), err)
	}

	// The same, without a race: what the replicated bucket answers to a
	// stale revision is what Claim and Evict take as a lost CAS.
	_, err = kv.Update(ctx, e.Key(), same.Encode(), e.Revision()-1)
	if !isWrongRevision(err) {
		t.Fatalf("update at a stale revision: %v, want a wrong-revision error", err)
	}
	if err := Delete(ctx, kv, e.Key(), e.Revision()-1); !isWrongRevision(err) {
		t.Fatalf("delete at a stale revision: %v, want a wrong-revision error", err)
	}
}

// race runs f(0..n-1) at once and returns their errors.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}
