// Package harnesstest adapts package harness to tests: every helper takes a
// testing.TB, fails the test on error, and registers t.Cleanup for what it
// made. When a test fails, the logs of the agents it started are printed
// before the network is torn down.
package harnesstest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// RequireEnv is the environment variable that turns a missing prerequisite
// from a skip into a failure (for CI, where a skipped suite would hide it).
const RequireEnv = "IKTO_REQUIRE_INTEGRATION"

// Require skips the test when the machine cannot run the harness, or fails
// it when IKTO_REQUIRE_INTEGRATION=1.
func Require(tb testing.TB) {
	tb.Helper()
	if err := harness.CheckPrerequisites(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%v (%s=1)", err, RequireEnv)
		}
		tb.Skip(err)
	}
}

// Network checks the prerequisites, creates a network and closes it when the
// test ends, printing every agent's log first if the test failed.
func Network(tb testing.TB) *harness.Network {
	tb.Helper()
	return NetworkWithOptions(tb, harness.NetworkOptions{})
}

// NetworkWithOptions is Network with options.
func NetworkWithOptions(tb testing.TB, opts harness.NetworkOptions) *harness.Network {
	tb.Helper()
	Require(tb)
	n, err := harness.NewNetworkWithOptions(opts)
	if err != nil {
		tb.Fatalf("network: %v", err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("close network %s: %v", n.Suffix, err)
		}
	})
	tb.Logf("network %s: underlay %s, mesh %s, dir %s", n.Suffix, n.Subnet, n.Mesh, n.Dir)
	return n
}

// AddHost adds a host or fails the test.
func AddHost(tb testing.TB, n *harness.Network, name string) *harness.Host {
	tb.Helper()
	h, err := n.AddHost(name)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// NATS starts an embedded server on the network's gateway (random port,
// store in a temp dir) and shuts it down when the test ends.
func NATS(tb testing.TB, n *harness.Network) *natsserver.Server {
	tb.Helper()
	return natstest.StartWith(tb, natsserver.Options{Host: n.Gateway})
}

// NewNATS prepares a server on a port picked now but does not start it: for
// "the agent starts before NATS" tests, which call Start later.
func NewNATS(tb testing.TB, n *harness.Network) *natsserver.Server {
	tb.Helper()
	return natstest.New(tb, natsserver.Options{Host: n.Gateway})
}

// DebianNATS runs Debian's nats-server (harness.DebianNATS; apt-get install
// nats-server) on host with conf, its store and config in dir, killed by
// PID when the test ends; a failed test prints its log. Without the binary
// the test is skipped, or fails with IKTO_REQUIRE_INTEGRATION=1.
func DebianNATS(tb testing.TB, host netip.Addr, dir, conf string) *harness.NATSProcess {
	tb.Helper()
	if _, err := os.Stat(harness.DebianNATS); err != nil {
		msg := fmt.Sprintf("%s: %v (apt-get install nats-server)", harness.DebianNATS, err)
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%s (%s=1)", msg, RequireEnv)
		}
		tb.Skip(msg)
	}
	p, err := harness.StartNATSProcess(harness.DebianNATS, host, dir, conf)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("stop nats-server pid %d: %v", p.PID, err)
		}
		if tb.Failed() {
			tb.Logf("---- nats-server %s (pid %d):\n%s", harness.DebianNATS, p.PID, p.Log())
		}
	})
	return p
}

// Bucket opens (or creates) the bucket on s and closes it when the test ends.
func Bucket(tb testing.TB, s *natsserver.Server, bucket string) *harness.Bucket {
	tb.Helper()
	return BucketAt(tb, s.URL(), bucket)
}

// BucketAt is Bucket on the server at natsURL (which may carry a user),
// whatever runs it.
func BucketAt(tb testing.TB, natsURL, bucket string) *harness.Bucket {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := harness.OpenBucket(ctx, natsURL, bucket)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// StartAgent starts an agent on h with cfg. Its log is printed if the test
// fails; Network.Close stops it.
func StartAgent(tb testing.TB, bins *harness.Binaries, h *harness.Host, cfg config.Config, extra ...string) *harness.Agent {
	tb.Helper()
	return StartAgentUnder(tb, nil, bins, h, cfg, extra...)
}

// StartAgentUnder is StartAgent as a service of sm (Host.StartAgentUnder).
func StartAgentUnder(tb testing.TB, sm *harness.ServiceManager, bins *harness.Binaries, h *harness.Host, cfg config.Config, extra ...string) *harness.Agent {
	tb.Helper()
	a, err := h.StartAgentUnder(sm, bins, cfg, extra...)
	if err != nil {
		tb.Fatal(err)
	}
	// Registered after the network's and the NATS server's cleanups, so it
	// runs before them: the agent stops while its server is still up (an
	// agent that loses NATS at teardown only adds noise to its log), and its
	// log is printed before the network's directory goes.
	tb.Cleanup(func() {
		if err := a.Stop(agentStopGrace); err != nil {
			tb.Errorf("stop %s: %v", a.Name, err)
		}
		if tb.Failed() {
			tb.Logf("---- %s (pid %d), log without wireguard-go's own lines:\n%s", a.Name, a.PID, agentLogTail(a, 60))
		}
	})
	return a
}

// agentLogTail is the last n lines of the agent's log, leaving out
// wireguard-go's verbose chatter, which would bury the agent's own lines.
func agentLogTail(a *harness.Agent, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(a.Logs(), "\n"), "\n") {
		if !strings.Contains(l, "source=wireguard-go") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentStopGrace is how long an agent may take to stop on SIGTERM at the
// end of a test before it is killed.
const agentStopGrace = 5 * time.Second

// The binaries are built once per test binary, on first use, into a
// directory Main removes.
var (
	binOnce sync.Once
	bins    *harness.Binaries
	binErr  error
	binDir  string
)

// Binaries returns the built ikto binaries (or IKTO_BIN_DIR's), building them
// on the first call of the run. It fails the test if one of names (default
// ikto-agent) is missing.
func Binaries(tb testing.TB, names ...string) *harness.Binaries {
	tb.Helper()
	Require(tb)
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ikto-bin-")
		if err != nil {
			binErr = fmt.Errorf("binary dir: %w", err)
			return
		}
		binDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		bins, binErr = harness.BuildBinaries(ctx, dir)
		tb.Logf("built binaries in %s", time.Since(start).Round(time.Millisecond))
	})
	if bins == nil {
		tb.Fatalf("binaries: %v", binErr)
	}
	if len(names) == 0 {
		names = []string{harness.AgentBinary}
	}
	for _, name := range names {
		if _, err := bins.Path(name); err != nil {
			tb.Fatalf("binaries: %v", err)
		}
	}
	return bins
}

// WriteFile writes data to path with exactly mode (os.WriteFile's mode
// passes the umask) and returns path.
func WriteFile(tb testing.TB, path string, data []byte, mode os.FileMode) string {
	tb.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		tb.Fatal(err)
	}
	return path
}

// SharedDir makes a fresh directory that every user may enter (the test's
// TempDir is root's alone), removed when the test ends.
func SharedDir(tb testing.TB, pattern string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Main runs the tests and removes the binaries afterwards:
//
//	func TestMain(m *testing.M) { os.Exit(harnesstest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		if err := os.RemoveAll(binDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "remove %s: %v\n", binDir, err)
		}
	}
	return code
}
