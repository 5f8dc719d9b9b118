package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Timeouts of the scenarios. Agents resync every 2s and watch events apply
// at once, so these are generous bounds, not expected durations.
const (
	convergeTimeout = 30 * time.Second
	pingTimeout     = 30 * time.Second
	exitTimeout     = 30 * time.Second
	// agentStopTimeout bounds an agent's exit on SIGTERM.
	agentStopTimeout = 10 * time.Second
)

const bucketName = "ikto-mesh"

// mesh is one scenario's world: a network, a NATS server, the test's own
// handle on the bucket, and the agents started so far, by host name.
type mesh struct {
	t    *testing.T
	net  *harness.Network
	nats *natsserver.Server // nil on a mesh served by Debian's nats-server
	// url and addr are where the agents reach a server that is not the
	// embedded one (newMeshOn); natsURL and natsAddr say where, either way,
	// and server is the server either way.
	url    string
	addr   netip.AddrPort
	proc   *harness.NATSProcess // Debian's nats-server, on a mesh served by it
	bucket *harness.Bucket
	bins   *harness.Binaries
	agents map[string]*harness.Agent
	// intruder is the record the hostile scenarios write over a claim.
	intruder peer.Record
}

// newMesh builds the world with NATS running and no host yet.
func newMesh(t *testing.T) *mesh {
	t.Helper()
	m := newMeshNATSDown(t)
	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	m.bucket = harnesstest.Bucket(t, m.nats, bucketName)
	return m
}

// newMeshNATSDown is newMesh with the NATS port picked but the server not
// started; the test starts it and opens the bucket itself.
func newMeshNATSDown(t *testing.T) *mesh {
	t.Helper()
	bins := harnesstest.Binaries(t)
	n := harnesstest.Network(t)
	return &mesh{
		t:      t,
		net:    n,
		nats:   harnesstest.NewNATS(t, n),
		bins:   bins,
		agents: map[string]*harness.Agent{},
	}
}

// natsURL is where the agents reach NATS.
func (m *mesh) natsURL() string {
	if m.url != "" {
		return m.url
	}
	return m.nats.URL()
}

// natsAddr is the address of the NATS server the agents use.
func (m *mesh) natsAddr() netip.AddrPort {
	if m.addr.IsValid() {
		return m.addr
	}
	return m.nats.Addr()
}

// addHosts adds hosts by name.
func (m *mesh) addHosts(names ...string) []*harness.Host {
	m.t.Helper()
	var hs []*harness.Host
	for _, name := range names {
		hs = append(hs, harnesstest.AddHost(m.t, m.net, name))
	}
	return hs
}

// startAll adds hosts by name, starts an agent on each with its default
// configuration and waits for the mesh to converge.
func (m *mesh) startAll(names ...string) []*harness.Host {
	m.t.Helper()
	hosts := m.addHosts(names...)
	for _, h := range hosts {
		m.start(h)
	}
	m.waitConverged(hosts)
	return hosts
}

// join adds a host by name and starts its agent with its default
// configuration; it must mesh with hosts, every pair answering pings. It
// returns hosts and the newcomer.
func (m *mesh) join(hosts []*harness.Host, name string) []*harness.Host {
	m.t.Helper()
	return m.joinWith(hosts, name, m.config)
}

// joinWith is join with the newcomer's configuration made by cfg.
func (m *mesh) joinWith(hosts []*harness.Host, name string, cfg func(*harness.Host) config.Config) []*harness.Host {
	m.t.Helper()
	h := m.addHosts(name)[0]
	m.startWith(h, cfg(h))
	all := append(hosts, h)
	m.waitConverged(all)
	m.pingAll(all)
	return all
}

// config is the host's default configuration for this mesh.
func (m *mesh) config(h *harness.Host) config.Config {
	return h.Config(m.natsURL(), bucketName)
}

// start starts an agent on h with its default configuration.
func (m *mesh) start(h *harness.Host) *harness.Agent {
	m.t.Helper()
	return m.startWith(h, m.config(h))
}

func (m *mesh) startWith(h *harness.Host, cfg config.Config) *harness.Agent {
	m.t.Helper()
	a := harnesstest.StartAgent(m.t, m.bins, h, cfg, "--log-level", "debug")
	m.agents[h.Name] = a
	return a
}

// waitConverged waits until every host's device lists every other host of
// hosts, and nothing else.
func (m *mesh) waitConverged(hosts []*harness.Host) {
	m.t.Helper()
	testkit.Eventually(m.t, convergeTimeout, "the mesh to converge", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return harness.CheckMesh(hosts)
	})
}

// exitedEarly reports an agent of hosts that has exited: a wait for their
// mesh can then never succeed, so the error is Permanent.
func (m *mesh) exitedEarly(hosts []*harness.Host) error {
	for _, h := range hosts {
		if a := m.agents[h.Name]; a != nil {
			if code, ok := a.ExitCode(); ok {
				return testkit.Permanent(fmt.Errorf("agent on %s exited with %d:\n%s", h.Name, code, a.LogTail(15)))
			}
		}
	}
	return nil
}

// pingAll checks that every host reaches every other host's private address
// through WireGuard. The first packets wait for a handshake, so each pair is
// retried until pingTimeout.
func (m *mesh) pingAll(hosts []*harness.Host) {
	m.t.Helper()
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			what := fmt.Sprintf("%s to ping %s at %s", from.Name, to.Name, to.PrivateAddress)
			testkit.EventuallyContext(m.t, pingTimeout, what, func(ctx context.Context) error {
				if err := m.exitedEarly([]*harness.Host{from, to}); err != nil {
					return err
				}
				_, err := from.Ping(ctx, to.PrivateAddress)
				return err
			})
		}
	}
}

// waitExit waits for the agent to exit and returns its code.
func waitExit(t *testing.T, a *harness.Agent) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Scaled(exitTimeout))
	defer cancel()
	code, err := a.Wait(ctx)
	if err != nil {
		t.Fatalf("%s did not exit: %v\n%s", a.Name, err, a.LogTail(30))
	}
	return code
}
