package bucket

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// rollupMsg is the attack of issue 19: one message on a key the sender may
// write, with a header that makes the stream drop every other message.
func rollupMsg(bucket, key string) *nats.Msg {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	m.Data = []byte(`{}`)
	return m
}

// Both buckets are made refusing rollups: the message is refused and the
// bucket keeps every record.
func TestBucketsRefuseRollups(t *testing.T) {
	js, kv, live := newLiveBucketJS(t)
	ctx := context.Background()
	putRecords(t, kv, 1, 3)
	kinds := map[string]kind{kv.Bucket(): meshKind, live.Bucket(): liveKind}
	for _, b := range []jetstream.KeyValue{kv, live} {
		if _, err := b.Put(ctx, "peers.x", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		_, err := js.PublishMsg(ctx, rollupMsg(b.Bucket(), "peers.x"))
		if err == nil || !strings.Contains(err.Error(), "rollup") {
			t.Errorf("rollup on %s: err = %v, want a refusal naming the rollup", b.Bucket(), err)
		}
		st, err := js.Stream(ctx, "KV_"+b.Bucket())
		if err != nil {
			t.Fatal(err)
		}
		if p := problems(st.CachedInfo().Config, kinds[b.Bucket()]); len(p) != 0 {
			t.Errorf("Problems(%s) = %v, want none", b.Bucket(), p)
		}
	}
	if n := values(t, kv); n != 4 {
		t.Errorf("bucket has %d values after the refused rollup, want 4", n)
	}
}

// A bucket made by nats.go's defaults (ikto 0.3.0, or the nats CLI)
// allows rollups and does not republish: Problems says so and names the
// fix, upgrade fixes both once.
func TestRefuseRollupsFixesAnOldBucket(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ikto-old"}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_ikto-old")
	if err != nil {
		t.Fatal(err)
	}
	p := Problems(st.CachedInfo().Config)
	if len(p) != 2 || !errors.Is(p[0], ErrUnsafeBucket) || !errors.Is(p[1], ErrNotRepublished) ||
		!strings.Contains(p[0].Error(), "init-bucket") || !strings.Contains(p[1].Error(), "init-bucket") {
		t.Fatalf("Problems of a default KV bucket = %v, want ErrUnsafeBucket and ErrNotRepublished naming init-bucket", p)
	}
	for i, want := range []bool{true, false} {
		changed, err := upgrade(ctx, js, "ikto-old", meshKind)
		if err != nil || changed != want {
			t.Fatalf("upgrade #%d = %v, %v; want %v, nil", i+1, changed, err, want)
		}
	}
	if st, err = js.Stream(ctx, "KV_ikto-old"); err != nil {
		t.Fatal(err)
	}
	if p := Problems(st.CachedInfo().Config); len(p) != 0 {
		t.Errorf("Problems after upgrade = %v, want none", p)
	}
	kv, err := OpenBucket(ctx, js, "ikto-old", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	putRecords(t, kv, 1, 2)
	if _, err := js.PublishMsg(ctx, rollupMsg("ikto-old", "peers.x")); err == nil {
		t.Fatal("a rollup on the fixed bucket was accepted")
	}
	if n := values(t, kv); n != 2 {
		t.Errorf("fixed bucket has %d values, want 2", n)
	}
}

// Messages removed without watch events — a rollup on a bucket that allows
// them, a purge through the stream's API — are found by the watcher, which
// reads the bucket again: the fresh snapshot lacks them, so the agent
// heals what was lost (docs/contract.md §5).
func TestWatcherFindsMessagesRemovedWithoutEvents(t *testing.T) {
	for _, tc := range []struct {
		name string
		// old: the bucket allows rollups (made with nats.go's defaults)
		old    bool
		remove func(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, audit chan<- struct{})
		want   int // entries in the snapshot read again
	}{
		{name: "rollup on an old bucket", old: true, want: 1, remove: func(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, _ chan<- struct{}) {
			if _, err := js.PublishMsg(context.Background(), rollupMsg(kv.Bucket(), "peers.x")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "purge request heard", want: 0, remove: func(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, audit chan<- struct{}) {
			purge(t, js, kv)
			audit <- struct{}{}
		}},
		{name: "purge found by the probe", want: 0, remove: func(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, _ chan<- struct{}) {
			purge(t, js, kv)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			_, js := natstest.Connect(t, s.URL())
			ctx := context.Background()
			var kv jetstream.KeyValue
			var err error
			if tc.old {
				kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ikto-test"})
			} else {
				kv, err = OpenBucket(ctx, js, "ikto-test", true, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			putRecords(t, kv, 1, 3)
			audit := make(chan struct{}, 1)
			probe := time.Hour
			if tc.name == "purge found by the probe" {
				probe = 300 * time.Millisecond
			}
			var settings [][]error
			out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Audit: audit, Probe: probe,
				Settings: func(problems []error) { settings = append(settings, problems) },
				Backoff:  retry.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond}})
			if b := recv(t, out); !b.Snapshot || len(b.Entries) != 3 {
				t.Fatalf("first batch: snapshot %v with %d entries, want a snapshot of 3", b.Snapshot, len(b.Entries))
			}
			start := time.Now()
			tc.remove(t, js, kv, audit)
			for {
				b := recv(t, out)
				if !b.Snapshot {
					continue // the rollup's own message
				}
				if len(b.Entries) != tc.want {
					t.Fatalf("snapshot read again has %d entries, want %d", len(b.Entries), tc.want)
				}
				t.Logf("read again %v after the removal", time.Since(start).Round(time.Millisecond))
				break
			}
			if len(settings) == 0 || (len(settings[0]) > 0) != tc.old {
				t.Errorf("Settings told %d times, first of problems %v; want rollups reported: %v", len(settings), settings, tc.old)
			}
		})
	}
}

// A watch that sees only ordinary updates on a bucket that refuses rollups
// never reads it again: the audit is for removals, not for traffic.
func TestWatcherKeepsItsWatchThroughUpdates(t *testing.T) {
	kv := newBucket(t)
	putRecords(t, kv, 1, 3)
	audit := make(chan struct{}, 1)
	out := runWatcher(t, &Watcher{Mesh: &Mesh{kv: kv}, Log: slog.New(slog.DiscardHandler), Audit: audit, Probe: 200 * time.Millisecond})
	recv(t, out)
	for i := 0; i < 20; i++ {
		putRecords(t, kv, 1, 3) // rewrites: the stream's first sequence moves on
		if i%5 == 0 {
			// A kick already pending is as good as this one; a blocking
			// send would wait on a watcher that waits on us to take a
			// batch.
			select {
			case audit <- struct{}{}:
			default:
			}
		}
		if b := recv(t, out); b.Snapshot {
			t.Fatalf("update %d: the watcher read the bucket again", i)
		}
	}
	deadline := time.After(time.Second)
	for {
		select {
		case b := <-out:
			if b.Snapshot {
				t.Fatal("the watcher read the bucket again after ordinary updates")
			}
		case <-deadline:
			return
		}
	}
}

func purge(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue) {
	t.Helper()
	st, err := js.Stream(context.Background(), "KV_"+kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func values(t *testing.T, kv jetstream.KeyValue) int {
	t.Helper()
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Values())
}
