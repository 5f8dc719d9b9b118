package harnesstest

import (
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// Cluster starts a 3-server JetStream cluster on the network's gateway
// (random ports, stores in a temp dir) and shuts it down when the test ends.
func Cluster(tb testing.TB, n *harness.Network) *harness.Cluster {
	tb.Helper()
	c, err := harness.NewCluster(harness.ClusterOptions{Host: n.Gateway, Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Shutdown)
	if err := c.Start(); err != nil {
		tb.Fatal(err)
	}
	return c
}
