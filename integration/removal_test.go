package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// healBound is what the contract promises for records lost to a purge or a
// rollup: written back within 2 s.
const healBound = 2 * time.Second

// TestMessagesRemovedUnderARunningMesh runs a mesh on a bucket made before
// ikto refused rollups (nats.go's defaults), as an upgraded fleet has until
// an operator runs init-bucket. Every agent says the bucket is unsafe, in
// its log and in ikto-admin status, and health fails naming init-bucket.
// Then one message with "Nats-Rollup: all" on one host's own key empties
// the bucket, and an operator's purge of the stream empties it again: each
// time every agent notices without a watch event and writes its record
// back within healBound, losing no ping. init-bucket then makes the
// bucket refuse rollups, and the agents stop calling it unsafe.
func TestMessagesRemovedUnderARunningMesh(t *testing.T) {
	m := newMeshNATSDown(t)
	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	_, js := adminJS(t, m.nats.URL())
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketName}); err != nil {
		t.Fatal(err)
	}
	m.bucket = harnesstest.Bucket(t, m.nats, bucketName)
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.waitConverged(hosts)
	m.pingAll(hosts)

	for _, h := range hosts {
		waitStatus(t, m, h, "unsafe bucket", true)
	}
	code, stdout, stderr := runAdmin(t, m.bins, "--nats-url", m.nats.URL(), "health")
	if code != 1 || !strings.Contains(stdout, "init-bucket") {
		t.Errorf("health on a bucket that allows rollups: exit %d, want 1 naming init-bucket\n%s%s", code, stdout, stderr)
	}

	for _, removal := range []struct {
		name string
		do   func() error
	}{
		{"a rollup on alpha's own key", func() error {
			msg := nats.NewMsg("$KV." + bucketName + "." + peer.Key(hosts[0].Prefix()))
			msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
			msg.Data = []byte(`{"name":"intruder"}`)
			_, err := js.PublishMsg(ctx, msg)
			return err
		}},
		{"a purge of the stream", func() error {
			s, err := js.Stream(ctx, "KV_"+bucketName)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
	} {
		t.Run(strings.ReplaceAll(removal.name, " ", "_"), func(t *testing.T) {
			pingers := startLossPingers(t, hosts)
			time.Sleep(500 * time.Millisecond)
			start := time.Now()
			if err := removal.do(); err != nil {
				t.Fatalf("%s: %v", removal.name, err)
			}
			var healed time.Duration
			testkit.Eventually(t, convergeTimeout, "every host's record back", func() error {
				for _, h := range hosts {
					if err := recordOf(ctx, js, h); err != nil {
						return err
					}
				}
				healed = time.Since(start)
				return nil
			})
			m.waitConverged(hosts)
			// The pingers' last second is not counted (replies still on
			// their way): run them well past the healing.
			time.Sleep(2 * time.Second)
			lost, gap := stopAll(t, pingers)
			t.Logf("%s: every record back after %s; %d pings lost, longest gap %s",
				removal.name, healed.Round(time.Millisecond), lost, gap.Round(time.Millisecond))
			if healed > testkit.Scaled(healBound) {
				t.Errorf("records back after %s, want within %s", healed, healBound)
			}
			if lost > 0 {
				t.Errorf("%d pings lost while the bucket was emptied", lost)
			}
		})
	}

	code, stdout, stderr = runAdmin(t, m.bins, "--nats-url", m.nats.URL(), "init-bucket")
	if code != 0 || !strings.Contains(stdout, "changed to refuse Nats-Rollup headers") {
		t.Fatalf("init-bucket: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, h := range hosts {
		waitStatus(t, m, h, "unsafe bucket", false)
	}
}

// adminJS is a JetStream handle on url as the operator: with opts, its
// credentials.
func adminJS(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("ikto-test-operator")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// recordOf is nil when h's record is in the bucket.
func recordOf(ctx context.Context, js jetstream.JetStream, h *harness.Host) error {
	kv, err := js.KeyValue(ctx, bucketName)
	if err != nil {
		return err
	}
	if _, err := kv.Get(ctx, peer.Key(h.Prefix())); err != nil {
		return fmt.Errorf("%s's record: %w", h.Name, err)
	}
	return nil
}

// waitStatus waits until ikto-admin status of h's agent shows want (or,
// with present false, no longer shows it).
func waitStatus(t *testing.T, m *mesh, h *harness.Host, want string, present bool) {
	t.Helper()
	what := fmt.Sprintf("ikto-admin status on %s to show %q: %v", h.Name, want, present)
	testkit.Eventually(t, convergeTimeout, what, func() error {
		_, stdout, stderr := runAdmin(t, m.bins, "status", "-s", m.agents[h.Name].SocketPath)
		if strings.Contains(stdout, want) != present {
			return fmt.Errorf("status:\n%s%s", stdout, stderr)
		}
		return nil
	})
}
