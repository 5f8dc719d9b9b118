package harness_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/bucket"
)

// The cluster serves an R3 bucket from inside a namespace, keeps it
// writable with any one member down, and takes a stopped member back on
// its ports with its store.
func TestClusterKeepsAnR3BucketThroughAMemberRestart(t *testing.T) {
	n := harnesstest.Network(t)
	h := harnesstest.AddHost(t, n, "a")
	c := harnesstest.Cluster(t, n)
	if len(c.Servers) != 3 {
		t.Fatalf("cluster of %d servers, want 3", len(c.Servers))
	}
	ctx := context.Background()
	for _, s := range c.Servers {
		if err := h.DialTCP(ctx, s.Addr()); err != nil {
			t.Fatalf("from the namespace: %v", err)
		}
	}
	if _, err := harness.OpenExistingBucket(ctx, c.URL(), "r3"); !errors.Is(err, bucket.ErrBucketMissing) {
		t.Fatalf("OpenExistingBucket of a missing bucket = %v, want ErrBucketMissing", err)
	}
	// Any member serves the cluster's API. A new cluster's first stream
	// waits for the meta leader to place it; on a loaded machine that can
	// outlast one open's 10 s, so the open is retried as the R3 one is.
	var b *harness.Bucket
	testkit.EventuallyContext(t, 30*time.Second, "a bucket on the new cluster to open", func(ctx context.Context) (err error) {
		b, err = harness.OpenBucket(ctx, c.Servers[0].URL(), "unused")
		return err
	})
	t.Cleanup(func() { _ = b.Close() })
	js, err := jetstream.New(b.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3}); err != nil {
		t.Fatalf("create R3 bucket: %v", err)
	}
	// A new R3 stream elects its leader first; on a loaded machine the
	// first stream-info request can outlast nats.go's 5 s API timeout.
	var r3 *harness.Bucket
	testkit.EventuallyContext(t, 30*time.Second, "the R3 bucket to open", func(ctx context.Context) (err error) {
		r3, err = harness.OpenExistingBucket(ctx, c.URL(), "r3")
		return err
	})
	t.Cleanup(func() { _ = r3.Close() })
	if n, err := r3.Replicas(ctx); err != nil || n != 3 {
		t.Fatalf("replicas = %d, %v; want 3", n, err)
	}

	for i, down := range c.Servers {
		down.Shutdown()
		if got := len(c.Running()); got != 2 {
			t.Fatalf("%d members running with one down, want 2", got)
		}
		testkit.EventuallyContext(t, 30*time.Second, "a write with "+down.Name()+" down", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := r3.Put(ctx, "k", []byte{byte(i)})
			return err
		})
		if err := down.Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ServerAt(c.Servers[1].URL()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServerAt("nats://198.18.0.1:1"); err == nil {
		t.Fatal("ServerAt found a server on a port none listens on")
	}
}
