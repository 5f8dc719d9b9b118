package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// TestHostThatCannotHaveItsDeviceClaimsNothing starts agents on hosts that
// cannot make their WireGuard device — the UDP port held by another
// WireGuard device, no CAP_NET_ADMIN — next to a running mesh. Each exits
// at once with a message that names the cause and the fix, and nothing of
// it reaches the bucket: a host that cannot serve its prefix must not claim
// it.
func TestHostThatCannotHaveItsDeviceClaimsNothing(t *testing.T) {
	m := newMesh(t)
	hosts := m.addHosts("alpha", "porttaken", "nocap")
	alpha, portTaken, noCap := hosts[0], hosts[1], hosts[2]
	m.start(alpha)
	m.waitConverged(hosts[:1])

	// Another WireGuard device (wireguard-go) holds porttaken's UDP port.
	holder := portTaken.DevName + "p"
	p, err := portTaken.Start("port-holder", "wireguard-go", "-f", holder)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(2 * time.Second)
		_ = os.Remove(filepath.Join("/var/run/wireguard", holder+".sock"))
	})
	if err := testkit.Poll(context.Background(), convergeTimeout, func(ctx context.Context) error {
		_, err := portTaken.Exec(ctx, "wg", "set", holder, "listen-port", "51820")
		return err
	}); err != nil {
		t.Fatalf("hold UDP port 51820 on %s: %v", portTaken.Name, err)
	}
	a := m.start(portTaken)
	checkRefused(t, m, portTaken, a, "UDP port 51820 is in use", "wg_port")

	// No CAP_NET_ADMIN: root without the capability in its bounding set.
	bin, err := m.bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, err := noCap.WriteConfig(m.config(noCap))
	if err != nil {
		t.Fatal(err)
	}
	proc, err := noCap.Start("agent-without-net-admin", "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
		bin, "-c", cfgPath, "-s", noCap.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	checkRefused(t, m, noCap, &harness.Agent{Process: proc, Host: noCap}, "CAP_NET_ADMIN", "run ikto-agent as root")

	if code, exited := m.agents[alpha.Name].ExitCode(); exited {
		t.Errorf("alpha's agent exited %d", code)
	}
}

// checkRefused waits for a's agent to exit non-zero with a message holding
// every one of want, and checks that h's prefix has no record.
func checkRefused(t *testing.T, m *mesh, h *harness.Host, a *harness.Agent, want ...string) {
	t.Helper()
	if code := waitExit(t, a); code == 0 {
		t.Errorf("agent on %s exited 0, want an error\n%s", h.Name, a.LogTail(10))
	}
	logs := a.Logs()
	for _, w := range want {
		if !strings.Contains(logs, w) {
			t.Errorf("agent on %s: the exit message does not say %q:\n%s", h.Name, w, a.LogTail(10))
		}
	}
	if strings.Contains(logs, `msg="claimed prefix"`) {
		t.Errorf("agent on %s claimed its prefix before refusing:\n%s", h.Name, a.LogTail(10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	if err := m.bucket.Absent(ctx, peer.Key(h.Prefix())); err != nil {
		t.Errorf("agent on %s wrote to the bucket: %v", h.Name, err)
	}
	t.Logf("%s refused: %s", h.Name, lastLine(logs))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
