package integration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// Four hosts on a 3-server cluster with an R3 bucket the agents created. The
// server one host is connected to stops: that host moves to another server,
// and a fifth host that joins during the failover reaches every device.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	n := harnesstest.Network(t)
	cluster := harnesstest.Cluster(t, n)
	m := &mesh{t: t, net: n, bins: harnesstest.Binaries(t), agents: map[string]*harness.Agent{}}
	clusterConfig := func(h *harness.Host) config.Config {
		cfg := h.Config(cluster.URL(), bucketName)
		cfg.NATSKVReplicas = 3
		return cfg
	}
	hosts := m.addHosts("alpha", "bravo", "charlie", "delta")
	for _, h := range hosts {
		m.startWith(h, clusterConfig(h))
	}
	m.waitConverged(hosts)

	ctx := context.Background()
	b, err := harness.OpenExistingBucket(ctx, cluster.URL(), bucketName)
	if err != nil {
		t.Fatalf("the agents' bucket: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if r, err := b.Replicas(ctx); err != nil || r != 3 {
		t.Fatalf("bucket %s has %d replicas (%v), want the agents' nats_kv_replicas 3", bucketName, r, err)
	}

	alpha := hosts[0]
	st, err := alpha.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	server, err := cluster.ServerAt(st.NATS.Server)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stopping %s (%s), alpha's server", server.Name(), server.Addr())
	stopped := time.Now()
	server.Shutdown()

	echo := m.addHosts("echo")[0]
	m.startWith(echo, clusterConfig(echo))
	hosts = append(hosts, echo)

	testkit.EventuallyContext(t, convergeTimeout, "alpha to fail over", func(ctx context.Context) error {
		st, err := alpha.Status(ctx)
		switch {
		case err != nil:
			return err
		case !st.NATS.Connected:
			return errors.New("alpha is not connected")
		case sameServer(cluster, st.NATS.Server, server):
			return fmt.Errorf("alpha is still on %q", st.NATS.Server)
		}
		t.Logf("alpha on %s %s after its server stopped", st.NATS.Server, time.Since(stopped).Round(time.Millisecond))
		return nil
	})
	m.waitConverged(hosts)
	t.Logf("echo, started during the failover, on every device %s after the server stopped", time.Since(stopped).Round(time.Millisecond))
	// For the record: hosts still connected whose watch's consumer was on
	// the stopped member catch up through the watch probe.
	for _, h := range hosts {
		if strings.Contains(m.agents[h.Name].Logs(), "watch fell behind the bucket") {
			t.Logf("%s re-read the bucket after its watch stalled", h.Name)
		}
	}
	m.pingAll(hosts)

	// The member comes back. However many reconnects and re-reads the
	// failover cost, the agents follow the bucket without a consumer: the
	// bucket's stream holds none (one that was placed on the stopped member
	// is only cleaned up once it returns).
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyContext(t, convergeTimeout, "no consumer left on the bucket's stream", func(ctx context.Context) error {
		n, err := consumersOf(ctx, b)
		if err == nil && n != 0 {
			err = fmt.Errorf("%d consumers on the bucket's stream of %d agents that follow it without one", n, len(hosts))
		}
		return err
	})
	for _, h := range hosts {
		testkit.EventuallyContext(t, convergeTimeout, "status of "+h.Name, func(ctx context.Context) error {
			return checkStatus(ctx, h, len(hosts)-1)
		})
	}
}

func sameServer(c *natsserver.Cluster, url string, s *natsserver.Server) bool {
	got, err := c.ServerAt(url)
	return err == nil && got == s
}
