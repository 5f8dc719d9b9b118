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

// soakNATS is the control plane under chaos: one embedded server, a 3-server
// JetStream cluster with an R3 bucket, or one Debian nats-server process.
// Either way it is a set of servers the soak stops and starts again on
// their ports and stores.
//
// A server starts in the background: a cluster member that comes back while
// the others are down can take many seconds to accept clients, and the
// fault loop must not stall meanwhile. Only the test's goroutine uses a
// soakNATS; a server being started is counted as down without asking it
// (its Running would wait for the start).
type soakNATS struct {
	topo     string
	servers  []harness.NATSServer
	cluster  *natsserver.Cluster
	url      string
	starting map[harness.NATSServer]bool
	started  chan soakStarted
}

// soakStarted is a background start that ended, after took.
type soakStarted struct {
	srv  harness.NATSServer
	err  error
	took time.Duration
}

func startSoakNATS(t *testing.T, n *harness.Network, topo string) *soakNATS {
	t.Helper()
	c := &soakNATS{topo: topo, starting: map[harness.NATSServer]bool{}, started: make(chan soakStarted, 8)}
	switch topo {
	case soakCluster:
		c.cluster = harnesstest.Cluster(t, n)
		for _, s := range c.cluster.Servers {
			c.servers = append(c.servers, s)
		}
		c.url = c.cluster.URL()
	case soakDebian:
		p := harnesstest.DebianNATS(t, n.Gateway, t.TempDir(), "")
		c.servers, c.url = []harness.NATSServer{p}, p.URL()
	default:
		s := harnesstest.NATS(t, n)
		c.servers, c.url = []harness.NATSServer{s}, s.URL()
	}
	return c
}

// startInBackground starts srv again without waiting for it.
func (c *soakNATS) startInBackground(srv harness.NATSServer) {
	c.starting[srv] = true
	go func() {
		at := time.Now()
		err := srv.Start()
		c.started <- soakStarted{srv: srv, err: err, took: time.Since(at)}
	}()
}

// collect returns the background starts that ended; with wait set it waits
// for all of them.
func (c *soakNATS) collect(wait bool) (done []soakStarted) {
	for len(c.starting) > 0 {
		var r soakStarted
		if wait {
			r = <-c.started
		} else {
			select {
			case r = <-c.started:
			default:
				return done
			}
		}
		delete(c.starting, r.srv)
		done = append(done, r)
	}
	return done
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
func (c *soakNATS) running() []harness.NATSServer {
	var up []harness.NATSServer
	for _, s := range c.servers {
		if _, busy := c.starting[s]; !busy && s.Running() {
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

// startAll brings every stopped server back, waiting for the background
// starts too, and on a cluster waits until the members are current with the
// meta leader.
func (c *soakNATS) startAll() error {
	var errs []error
	done := c.collect(true)
	for _, r := range done {
		errs = append(errs, r.err)
	}
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
