package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// firstReplyBound is what first contact must beat: WireGuard's own retry
// after a dropped or crossed initiation comes 5 s later, so a pair whose
// first reply takes longer than this needed it.
const firstReplyBound = 4500 * time.Millisecond

// TestFirstContactNeedsNoWireGuardRetry launches ten hosts at once with
// every ordered pair pinging from the start. It asserts the mechanism, not a
// speed: no pair needed WireGuard's 5 s handshake retry — every pair's first
// reply comes less than 4.5 s after both ends configured each other (as
// their agents' logs say). The figures are logged. Agents that let both ends
// initiate, or initiate before the other end knows them, fail it.
func TestFirstContactNeedsNoWireGuardRetry(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("h%02d", i))
	}
	hosts := m.addHosts(names...)

	// Every ordered pair pings from the start: each pinger is up before any
	// agent, and starts ping again (every 50 ms) while the host has no route
	// into the mesh yet, so the first echo request goes out the moment the
	// device exists.
	type pair struct{ from, to *harness.Host }
	pingers := map[pair]*harness.Process{}
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			loop := fmt.Sprintf("until ping -n -D -i 0.1 -W 1 %s; do sleep 0.05; done", to.PrivateAddress)
			p, err := from.Start("first-"+to.Name, "sh", "-c", loop)
			if err != nil {
				t.Fatal(err)
			}
			pingers[pair{from, to}] = p
		}
	}
	for _, h := range hosts {
		m.start(h)
	}
	waitUp(t, m, hosts)
	m.waitConverged(hosts)
	var took []time.Duration
	var mu sync.Mutex
	testkit.EventuallyContext(t, 30*time.Second, "every pair's first reply", func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		took = took[:0]
		missing := 0
		for pr, p := range pingers {
			first, ok := firstReply(p.Logs())
			if !ok {
				missing++
				continue
			}
			// A pair is up once each end's device has the other: from then
			// on only the handshake stands between them.
			both, err := configuredAt(m.agents[pr.from.Name].Logs(), pr.to.Name)
			if err != nil {
				return err
			}
			other, err := configuredAt(m.agents[pr.to.Name].Logs(), pr.from.Name)
			if err != nil {
				return err
			}
			if other.After(both) {
				both = other
			}
			took = append(took, max(first.Sub(both), 0))
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d pairs have no reply yet", missing, len(pingers))
		}
		return nil
	})
	for _, p := range pingers {
		_ = p.Stop(time.Second)
	}
	slices.Sort(took)
	t.Logf("first reply after both ends were up, %d pairs: median %s, p99 %s, max %s",
		len(took), took[len(took)/2].Round(time.Millisecond), took[len(took)*99/100].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	slow := 0
	for _, d := range took {
		if d >= firstReplyBound {
			slow++
		}
	}
	if slow > 0 {
		t.Errorf("%d pairs took %s or more for their first reply: WireGuard's 5 s retry was needed", slow, firstReplyBound)
	}
}

// waitUp returns when each host's agent has reported synced, with when the
// test first saw it.
func waitUp(t *testing.T, m *mesh, hosts []*harness.Host) map[string]time.Time {
	t.Helper()
	up := map[string]time.Time{}
	testkit.EventuallyContext(t, convergeTimeout, "every agent synced", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		for _, h := range hosts {
			if _, ok := up[h.Name]; ok {
				continue
			}
			if st, err := h.Status(ctx); err == nil && st.Synced {
				up[h.Name] = time.Now()
			}
		}
		if len(up) < len(hosts) {
			return fmt.Errorf("%d of %d synced", len(up), len(hosts))
		}
		return nil
	})
	return up
}

var replyAt = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from `)

// firstReply is the time of the first echo reply in a `ping -D` log.
func firstReply(log string) (time.Time, bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		if m := replyAt.FindStringSubmatch(sc.Text()); m != nil {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			usec, _ := strconv.ParseInt(m[2], 10, 64)
			return time.Unix(sec, usec*1000), true
		}
	}
	return time.Time{}, false
}

var logTime = regexp.MustCompile(`^time=(\S+) `)

// configuredAt is when an agent's log says its device got peer name: its own
// "peer added" line, or the summary of a pass that configured many peers.
func configuredAt(log, name string) (time.Time, error) {
	var summary time.Time
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := sc.Text()
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, `msg="peer added"`) && strings.Contains(line, " peer="+name+" "):
			return at, nil
		case strings.Contains(line, `msg="peers configured"`) && summary.IsZero():
			summary = at
		}
	}
	if summary.IsZero() {
		return time.Time{}, fmt.Errorf("no log line says %s was configured", name)
	}
	return summary, nil
}
