package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
)

// soakStats counts what one topology's soak did.
type soakStats struct {
	injected, skipped map[string]int
	starts            int // agent processes started
	chaos             time.Duration
	deviceHeals       []time.Duration
	natsStarts        []time.Duration // how long each server took to start again
	evictions         []*soakHost
}

// auditLogs runs the log audit over every agent log of the soak.
func (s *soak) auditLogs(q *soakQuiet) {
	for _, h := range s.hosts {
		for _, a := range h.agents {
			applied, intruders, unnamed, err := soakAuditLog(s.model, h.Name, a.LogPath)
			if err != nil {
				s.model.violate("audit of %s: %v", a.LogPath, err)
			}
			q.applied += applied
			q.intruders += intruders
			q.unnamed += unnamed
		}
	}
}

// report prints what the soak injected and measured.
func (s *soak) report(q soakQuiet) {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos soak (%s NATS), seed %d: %s of chaos, %d agent starts, %d hosts in all\n",
		s.topo.name, s.cfg.topologySeed(s.topo.name), s.stats.chaos.Round(time.Millisecond), s.stats.starts, len(s.hosts))
	fmt.Fprintf(&b, "  injected:")
	total := 0
	for _, k := range soakSortedKeys(s.stats.injected) {
		fmt.Fprintf(&b, " %s=%d", k, s.stats.injected[k])
		total += s.stats.injected[k]
	}
	fmt.Fprintf(&b, " (total %d)\n  skipped (nothing to act on):", total)
	for _, k := range soakSortedKeys(s.stats.skipped) {
		fmt.Fprintf(&b, " %s=%d", k, s.stats.skipped[k])
	}
	samples, peers, evictedSeen := s.model.sampleCounts()
	keys, longest := s.model.intruderReport()
	fmt.Fprintf(&b, "\n  sampler: %d device reads, %d peers checked; log audit: %d peer applications read, %d of them logged without a name (peer=\"\")\n",
		samples, peers, q.applied, q.unnamed)
	fmt.Fprintf(&b, "  intruder records (valid records of fresh keys over live claims, applied by design until restored): "+
		"%d applications in logs, %d keys seen on devices, longest seen over %s\n", q.intruders, keys, longest.Round(time.Millisecond))
	s.reportEvictions(&b, evictedSeen)
	fmt.Fprintf(&b, "  NATS server restarts (to accepting clients): %s\n", soakDurations(s.stats.natsStarts))
	if len(s.stats.deviceHeals) > 0 {
		fmt.Fprintf(&b, "  devices recreated whole after deletion: %s\n", soakDurations(s.stats.deviceHeals))
	}
	if q.heal >= 0 {
		fmt.Fprintf(&b, "  time to quiet after the chaos: %s\n", q.heal.Round(time.Millisecond))
	}
	s.reportPings(&b, q.pings)
	for _, l := range q.lossFigures {
		fmt.Fprintf(&b, "  steady pinger %s → %s over the chaos (20/s): %s\n", l.from, l.to, l)
	}
	for _, r := range q.leaks {
		fmt.Fprintf(&b, "  leak check %s (pid %d, %v NATS reconnects): fds %d → %d, goroutines %d → %d, peers %d → %d: %s\n",
			r.host, r.warm.pid, r.reconnects, r.warm.fds, r.end.fds, r.warm.goroutines, r.end.goroutines, r.warm.peers, r.end.peers, r.verdict)
	}
	fails := s.model.failures()
	fmt.Fprintf(&b, "  invariant violations: %d", len(fails))
	s.t.Log(b.String())
	s.t.Logf("timeline (%d lines):\n%s", len(s.timeline), soakIndent(s.timelineText(), "  "))
}

func (s *soak) reportEvictions(b *strings.Builder, seen time.Duration) {
	var exits []time.Duration
	for _, h := range s.stats.evictions {
		if h.evictedRunning && !h.exitedAt.IsZero() {
			exits = append(exits, h.exitedAt.Sub(h.evictedAt))
		}
	}
	fmt.Fprintf(b, "  evictions: %d; running agent's exit 4 after ikto-admin evict returned: %s; evicted key last seen on a device %s after\n",
		len(s.stats.evictions), soakDurations(exits), seen.Round(time.Millisecond))
}

// reportPings prints how long after quiet the pairs first answered.
func (s *soak) reportPings(b *strings.Builder, pings []soakPairPing) {
	for _, reverse := range []bool{false, true} {
		var took []time.Duration
		var slow []string
		failed, n := 0, 0
		for _, p := range pings {
			if p.reverse != reverse {
				continue
			}
			n++
			if p.err != nil {
				failed++
				continue
			}
			took = append(took, p.took)
			if p.took > s.cfg.pingBound {
				slow = append(slow, fmt.Sprintf("%s→%s %s", p.from, p.to, p.took.Round(time.Millisecond)))
			}
		}
		if n == 0 {
			continue
		}
		what := "pings after quiet (one end of each pair, all at once)"
		switch {
		case reverse:
			what = "then from the other end"
		case s.cfg.pingBoth:
			what = "pings after quiet (both ends of each pair, all at once)"
		}
		fmt.Fprintf(b, "  %s: %d, first reply %s; over %s: %d %v; no reply: %d\n",
			what, n, soakDurations(took), s.cfg.pingBound, len(slow), slow, failed)
	}
}

// soakDurations is "min/median/max" of ds.
func soakDurations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %s, median %s, max %s (n=%d)", r(ds[0]), r(ds[len(ds)/2]), r(ds[len(ds)-1]), len(ds))
}

func (s *soak) timelineText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return soakLines(s.timeline)
}

func soakLines(lines []string) string { return strings.Join(lines, "\n") }

// soakCheckNothingLeft fails the test if anything of the network with suffix
// outlived its Close: a namespace, a link, a WireGuard control socket.
// Namespaces are freed asynchronously, so it polls briefly.
func soakCheckNothingLeft(t *testing.T, suffix string) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, "nothing left of network "+suffix, func() error {
		var left []string
		if out, err := exec.Command("ip", "netns", "list").Output(); err != nil {
			return err
		} else if strings.Contains(string(out), "ikto-"+suffix) {
			left = append(left, "namespaces")
		}
		if out, err := exec.Command("ip", "-o", "link").Output(); err != nil {
			return err
		} else if strings.Contains(string(out), suffix) {
			left = append(left, "links")
		}
		entries, _ := os.ReadDir("/var/run/wireguard")
		for _, e := range entries {
			if strings.Contains(e.Name(), suffix) {
				left = append(left, "/var/run/wireguard/"+e.Name())
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left behind: %v", left)
		}
		return nil
	})
}
