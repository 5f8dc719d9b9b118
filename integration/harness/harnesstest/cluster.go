package harnesstest

import (
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
)

// Cluster starts a 3-server JetStream cluster on the network's gateway
// (random ports, stores in a temp dir) and shuts it down when the test ends.
func Cluster(tb testing.TB, n *harness.Network) *natsserver.Cluster {
	tb.Helper()
	return natstest.Cluster(tb, natsserver.ClusterOptions{Host: n.Gateway})
}
