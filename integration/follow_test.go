package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/lossy"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// followLoss is the share of what the bucket's stream republishes that the
// proxy in front of every agent loses.
const followLoss = 0.4

// TestMeshFollowsThroughLoss: every agent reaches NATS through a proxy that
// loses 40% of what the bucket's stream republishes (core NATS, at most
// once), on the embedded server and on Debian's nats-server 2.9.10. Three
// hosts mesh; a fourth joins; one host's record is deleted (it is evicted);
// the server restarts. After each step every device lists exactly the
// hosts that stay, the bucket's stream holds no consumer for the agents,
// and pings between the two hosts that stay throughout lose nothing.
func TestMeshFollowsThroughLoss(t *testing.T) {
	onEveryServer(t, func(t *testing.T, m *mesh) {
		proxy, err := lossy.Start(netip.AddrPortFrom(m.net.Gateway, 0).String(), m.natsAddr().String(), lossy.Prefix("ikto.kv.", followLoss))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = proxy.Close() })
		m.url = proxy.URL()
		hosts := m.startAll("alpha", "bravo", "charlie")
		t.Cleanup(func() {
			if t.Failed() {
				for name, a := range m.agents {
					t.Logf("%s's agent:\n%s", name, a.LogTail(25))
				}
			}
		})
		m.pingAll(hosts)
		pingers := startLossPingers(t, hosts[:2])
		step := func(what string, hosts []*harness.Host) {
			t.Helper()
			start := time.Now()
			m.waitConverged(hosts)
			t.Logf("%s: every device right after %s", what, time.Since(start).Round(time.Millisecond))
			noConsumers(t, m)
		}
		step("three hosts", hosts)

		hosts = m.join(hosts, "delta")
		step("delta joined", hosts)

		charlie := hosts[2]
		if err := m.bucket.Delete(context.Background(), peer.Key(charlie.Prefix())); err != nil {
			t.Fatalf("delete charlie's record: %v", err)
		}
		if code := waitExit(t, m.agents[charlie.Name]); code != 4 {
			t.Errorf("evicted agent exited %d, want 4\n%s", code, m.agents[charlie.Name].LogTail(20))
		}
		hosts = []*harness.Host{hosts[0], hosts[1], hosts[3]}
		step("charlie evicted", hosts)

		m.restartNATS()
		step("server restarted", hosts)
		m.pingAll(hosts)

		lost, gap := stopAll(t, pingers)
		t.Logf("proxy dropped %d of %d republished messages; alpha ⇄ bravo lost %d pings, longest gap %s",
			proxy.Dropped(), proxy.Dropped()+proxy.Passed(), lost, gap.Round(time.Millisecond))
		if proxy.Dropped() == 0 {
			t.Error("the proxy dropped nothing: no loss was tested")
		}
		if lost != 0 {
			t.Errorf("%d pings lost between alpha and bravo, want 0", lost)
		}
	})
}

// noConsumers checks that the bucket's stream holds no consumer once the
// agents follow it (a scan may hold one for a moment).
func noConsumers(t *testing.T, m *mesh) {
	t.Helper()
	testkit.EventuallyContext(t, convergeTimeout, "no consumer on the bucket's stream", func(ctx context.Context) error {
		n, err := consumersOf(ctx, m.bucket)
		if err == nil && n != 0 {
			err = fmt.Errorf("%d consumers on the bucket's stream", n)
		}
		return err
	})
}

// consumersOf is how many consumers the stream of b holds.
func consumersOf(ctx context.Context, b *harness.Bucket) (int, error) {
	js, err := jetstream.New(b.Conn)
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(ctx, "KV_"+b.Bucket())
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Consumers, nil
}
