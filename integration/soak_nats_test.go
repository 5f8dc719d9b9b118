package integration_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
)

// soakNATS is the control plane under chaos: one server, or a 3-server
// JetStream cluster with an R3 bucket. Either way it is a set of servers the
// soak stops and starts again on their ports and stores.
type soakNATS struct {
	topo    string
	servers []*natsserver.Server
	cluster *natsserver.Cluster
	url     string
}

func startSoakNATS(t *testing.T, n *harness.Network, topo string) *soakNATS {
	t.Helper()
	if topo == soakCluster {
		c := harnesstest.Cluster(t, n)
		return &soakNATS{topo: topo, servers: c.Servers, cluster: c, url: c.URL()}
	}
	s := harnesstest.NATS(t, n)
	return &soakNATS{topo: topo, servers: []*natsserver.Server{s}, url: s.URL()}
}

// replicas is what the agents' nats_kv_replicas says: 3 on the cluster, so
// that the bucket stays writable with one member down.
func (c *soakNATS) replicas() int {
	if c.cluster != nil {
		return 3
	}
	return 0
}

// running is the servers that are up.
func (c *soakNATS) running() []*natsserver.Server {
	var up []*natsserver.Server
	for _, s := range c.servers {
		if s.Running() {
			up = append(up, s)
		}
	}
	return up
}

// writable reports whether enough servers are up for the bucket to take
// writes: the one server, or a quorum (2 of 3) of the cluster. It says
// nothing of a raft election still under way; writes are bounded by a
// timeout and counted as skipped when they fail.
func (c *soakNATS) writable() bool {
	return len(c.running())*2 > len(c.servers)
}

// down is how many servers are stopped.
func (c *soakNATS) down() int { return len(c.servers) - len(c.running()) }

// startAll brings every stopped server back, and on a cluster waits until
// the members are current with the meta leader.
func (c *soakNATS) startAll() error {
	var errs []error
	for _, s := range c.servers {
		if !s.Running() {
			errs = append(errs, s.Start())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if c.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return c.cluster.WaitReady(ctx)
	}
	return nil
}
