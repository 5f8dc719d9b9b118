package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// The scenarios of this package's new files (outage, cluster, snapshot,
// drift) each build their own network, NATS and hosts with per-run names, so
// they run in parallel with each other: the 150 s outage then costs the
// suite little more than its own length.

// Bounds of the outage scenarios. They catch a broken data plane or a
// spinning agent; they are not performance targets.
const (
	// maxPingGap is the longest a pair of hosts may go without one echo
	// reply while NATS is down (pings go out every 0.5 s; a loaded machine
	// may lose one or two).
	maxPingGap = 5 * time.Second
	// maxOutageCPU is the share of one core an agent may use while NATS
	// is down: near idle is ~0; 0.3.0's spin was ~65 %.
	maxOutageCPU = 0.20
	// outagePing is how often the pingers of an outage send.
	outagePing = 500 * time.Millisecond
)

func TestNATSDownTenSeconds(t *testing.T) {
	onEveryServer(t, func(t *testing.T, m *mesh) { natsOutage(t, m, 10*time.Second) })
}

// The outage that broke 0.3.0: nats.go's default of 60 reconnects runs out
// in about two minutes.
func TestNATSDownTwoAndAHalfMinutes(t *testing.T) {
	onEveryServer(t, func(t *testing.T, m *mesh) { natsOutage(t, m, 150*time.Second) })
}

// natsOutage stops the whole control plane for d with two hosts meshed:
// traffic keeps flowing, devices are not touched, agents stay near idle,
// and once NATS is back a host joining reaches everyone.
func natsOutage(t *testing.T, m *mesh, d time.Duration) {
	hosts := m.startAll("alpha", "bravo")
	m.pingAll(hosts)
	pingers := startLossPingers(t, hosts, outagePing)

	cpuBefore := agentCPU(t, m, hosts)
	down := time.Now()
	m.server().Shutdown()
	testkit.EventuallyContext(t, d+convergeTimeout, "the outage to last "+d.String(), func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if err := harness.CheckMesh(hosts); err != nil {
			return testkit.Permanent(fmt.Errorf("device changed while NATS was down: %w", err))
		}
		if time.Since(down) < d {
			return errors.New("NATS still down")
		}
		return nil
	})
	up := time.Now()
	cpuAfter := agentCPU(t, m, hosts)
	for _, h := range hosts {
		share := (cpuAfter[h.Name] - cpuBefore[h.Name]).Seconds() / up.Sub(down).Seconds()
		t.Logf("agent on %s: %s CPU over %s of outage = %.2f%% of one core",
			h.Name, cpuAfter[h.Name]-cpuBefore[h.Name], up.Sub(down).Round(time.Millisecond), 100*share)
		if share > maxOutageCPU {
			t.Errorf("agent on %s used %.1f%% of a core while NATS was down, want < %.0f%%: spinning?\n%s",
				h.Name, 100*share, 100*maxOutageCPU, m.agents[h.Name].LogTail(20))
		}
	}
	// Replies are counted across the whole outage, not only the start and
	// end: a loaded machine may lose one or two, never a stretch.
	if _, gap := stopAll(t, pingers); gap > maxPingGap {
		t.Errorf("a pair went %s without an echo reply while NATS was down (allowed %s)", gap.Round(time.Millisecond), maxPingGap)
	}

	if err := m.server().Start(); err != nil {
		t.Fatal(err)
	}
	// A change made after the outage must reach every agent: their watches
	// came back.
	m.join(hosts, "charlie")
}

// agentCPU reads the user+system CPU time of each host's agent process.
func agentCPU(t *testing.T, m *mesh, hosts []*harness.Host) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for _, h := range hosts {
		cpu, err := processCPU(m.agents[h.Name].PID)
		if err != nil {
			t.Fatalf("agent on %s: %v", h.Name, err)
		}
		out[h.Name] = cpu
	}
	return out
}

// processCPU is utime+stime from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3 (state).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("cpu time of pid %d: short stat line %q", pid, s)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / time.Duration(clockTicks()), nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat times.
func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if n, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && perr == nil && n > 0 {
		return n
	}
	return 100 // USER_HZ on every Linux architecture Go supports
}
