package integration_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// TestFirstPacketIsDelivered is first contact as one service opening one
// connection sees it: ten hosts (and, in a third launch, thirty) launch at
// once; once every device lists every peer, each ordered pair is pinged
// once, one pair after another, one direction at a time (`ping -c1 -W1`). Nothing else sends, so a pair's
// first packet meets whatever handshake state first contact left, from
// whichever end it comes: every pair must answer at the first try. The
// sweep starts once every peer is listed with its endpoint (the measure of
// issue 22), and, in a second launch, as soon as every peer is listed at
// all: an end that configures a peer without its endpoint until a handshake
// would otherwise hide the pairs whose handshake is still pending. The
// figures — pairs that did not answer, and launch → every pair answered —
// are logged. It runs alone, not beside the parallel tests: thirty agents
// and devices launched at once take both cores for seconds, and tests that
// promise at most one ping lost (a key rotation) would pay for it.
func TestFirstPacketIsDelivered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hosts  int
		listed func(hosts []*harness.Host) error
	}{
		{"10 hosts with endpoints", 10, harness.CheckMesh},
		{"10 hosts peers listed", 10, listsPeers},
		{"30 hosts with endpoints", 30, harness.CheckMesh},
	} {
		// One launch at a time: the agents of several launches starting
		// at once on a small machine would measure the machine.
		t.Run(tc.name, func(t *testing.T) { firstPacketSweep(t, tc.hosts, tc.listed) })
	}
}

// firstPacketSweep launches count hosts, waits until listed holds, then
// pings every ordered pair once.
func firstPacketSweep(t *testing.T, count int, listed func(hosts []*harness.Host) error) {
	// Pinned neighbour entries: past ~30 namespaces the neighbour table's
	// garbage collection would lose pings of its own.
	m, hosts := newRaceMesh(t, count)

	// One shell per host runs the pings: `ip netns exec` costs more than a
	// ping, and the sweep must follow the listing closely, as a service's
	// first connection would.
	shells := map[*harness.Host]*pingShell{}
	for _, h := range hosts {
		shells[h] = startPingShell(t, h)
	}

	cfgs := make([]config.Config, len(hosts))
	for i, h := range hosts {
		cfgs[i] = m.config(h)
	}
	launch := time.Now()
	startTogether(t, m, hosts, cfgs)
	// Every device polled every 10 ms, as the measuring harness does: the
	// pings start the moment the mesh is listed.
	at := waitListed(t, m, hosts, listed)
	t.Logf("launch → every device lists every peer: %s", at.Sub(launch).Round(time.Millisecond))

	var lost []string
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			if shells[from].ping(t, to.PrivateAddress) {
				continue
			}
			lost = append(lost, from.Name+"→"+to.Name)
			what := fmt.Sprintf("%s to ping %s at %s", from.Name, to.Name, to.PrivateAddress)
			testkit.Eventually(t, pingTimeout, what, func() error {
				if !shells[from].ping(t, to.PrivateAddress) {
					return errors.New("no answer")
				}
				return nil
			})
		}
	}
	pairs := len(hosts) * (len(hosts) - 1)
	t.Logf("%d hosts: %d of %d pairs answered at the first ping; launch → every pair answered %s",
		len(hosts), pairs-len(lost), pairs, time.Since(launch).Round(time.Millisecond))
	if len(lost) > 0 {
		byName := map[string]*harness.Host{}
		for _, h := range hosts {
			byName[h.Name] = h
		}
		for _, pr := range lost {
			from, to, _ := strings.Cut(pr, "→")
			t.Logf("%s's agent about %s:\n%s", from, to, linesAbout(m.agents[from].Logs(), byName[to]))
			t.Logf("%s's agent about %s:\n%s", to, from, linesAbout(m.agents[to].Logs(), byName[from]))
		}
		t.Errorf("the first ping of %d pairs got no answer: %s", len(lost), strings.Join(lost, ", "))
	}
}

// waitListed polls every device every 10 ms until listed holds, and returns
// when it first did.
func waitListed(t *testing.T, m *mesh, hosts []*harness.Host, listed func(hosts []*harness.Host) error) time.Time {
	t.Helper()
	deadline := time.Now().Add(testkit.Scaled(convergeTimeout))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := m.exitedEarly(hosts); err != nil {
			t.Fatal(err)
		}
		err := listed(hosts)
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for every device to list every peer: %v", err)
		}
		<-tick.C
	}
}

// listsPeers is nil when every host's device has every other host's prefix
// as a peer, whatever its endpoint.
func listsPeers(hosts []*harness.Host) error {
	for _, h := range hosts {
		view, err := h.DeviceView()
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		for _, o := range hosts {
			if v, ok := view[o.PublicKey.String()]; o != h && (!ok || v.AllowedIPs != o.Prefix().String()) {
				return fmt.Errorf("device of %s does not list %s", h.Name, o.Name)
			}
		}
	}
	return nil
}

// linesAbout is the lines of an agent's log about peer h: the agent's own
// (by name or public key) and wireguard-go's (by its short form of the key).
func linesAbout(log string, h *harness.Host) string {
	k := h.PublicKey.String()
	marks := []string{"peer=" + h.Name + " ", `public_key="` + k, "peer(" + k[:4] + "…" + k[len(k)-5:len(k)-1] + ")"}
	var b strings.Builder
	for line := range strings.Lines(log) {
		for _, mark := range marks {
			if strings.Contains(line, mark) {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}

// pingShell is a shell in a host's namespace that runs one `ping -c1 -W1`
// per request.
type pingShell struct {
	in  io.Writer
	out *bufio.Scanner
}

func startPingShell(t *testing.T, h *harness.Host) *pingShell {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", h.Namespace, "sh")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("shell on %s: %v", h.Name, err)
	}
	t.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	return &pingShell{in: in, out: bufio.NewScanner(out)}
}

// ping sends one echo request to addr and reports whether it was answered
// within a second.
func (s *pingShell) ping(t *testing.T, addr netip.Addr) bool {
	t.Helper()
	if _, err := fmt.Fprintf(s.in, "ping -n -c1 -W1 %s >/dev/null 2>&1; echo $?\n", addr); err != nil {
		t.Fatal(err)
	}
	if !s.out.Scan() {
		t.Fatalf("ping shell ended: %v", s.out.Err())
	}
	return s.out.Text() == "0"
}
