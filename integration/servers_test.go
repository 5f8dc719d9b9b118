package integration_test

import (
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
)

// The server matrix: the scenarios that depend on what the server does
// (healing, outages, following, enrollment, the soak's short run) run on
// each server ikto supports, named here once.
const (
	// serverEmbedded is the current release, embedded in the test binary.
	serverEmbedded = "embedded"
	// serverDebian is Debian's packaged nats-server (2.9.10 in bookworm),
	// the oldest the docs promise, run as a process.
	serverDebian = "debian"
)

// servers are the servers of the matrix.
var servers = []string{serverEmbedded, serverDebian}

// forEachServer runs test in a subtest per server of the matrix, named
// nats-server-SERVER.
func forEachServer(t *testing.T, test func(t *testing.T, server string)) {
	for _, server := range servers {
		t.Run("nats-server-"+server, func(t *testing.T) { test(t, server) })
	}
}

// onEveryServer runs scenario in parallel subtests, one per server, each on
// its own mesh with NATS running and no host yet.
func onEveryServer(t *testing.T, scenario func(t *testing.T, m *mesh)) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, server string) {
		t.Parallel()
		scenario(t, newMeshOn(t, server))
	})
}

// newMeshOn is newMesh on a server of the matrix; Debian's is started in
// the test network with JetStream and no auth.
func newMeshOn(t *testing.T, server string) *mesh {
	t.Helper()
	switch server {
	case serverEmbedded:
		return newMesh(t)
	case serverDebian:
		bins := harnesstest.Binaries(t)
		n := harnesstest.Network(t)
		p := harnesstest.DebianNATS(t, n.Gateway, t.TempDir(), "")
		b := harnesstest.BucketAt(t, p.URL(), bucketName)
		return &mesh{t: t, net: n, url: p.URL(), addr: p.Addr, proc: p, bucket: b, bins: bins, agents: map[string]*harness.Agent{}}
	}
	t.Fatalf("no server %q in the matrix (%v)", server, servers)
	return nil
}

// server is the mesh's NATS server, whichever it is.
func (m *mesh) server() harness.NATSServer {
	if m.proc != nil {
		return m.proc
	}
	return m.nats
}

// restartNATS stops the mesh's server, whichever it is, and starts it again
// on the same port and store: Debian's is killed by PID, the embedded one
// shut down.
func (m *mesh) restartNATS() {
	m.t.Helper()
	if m.proc != nil {
		if err := m.proc.Restart(nil); err != nil {
			m.t.Fatal(err)
		}
		return
	}
	m.nats.Shutdown()
	if err := m.nats.Start(); err != nil {
		m.t.Fatal(err)
	}
}
