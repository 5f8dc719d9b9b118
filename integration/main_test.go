// Package integration_test runs ikto's scenario tests: real ikto-agent
// processes in network namespaces on a bridge, with an embedded NATS server
// in the root namespace, built and torn down by package harness.
package integration_test

import (
	"os"
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
)

func TestMain(m *testing.M) { os.Exit(harnesstest.Main(m)) }
