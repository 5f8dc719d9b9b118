package harness_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

func TestUnderlay(t *testing.T) {
	n := harnesstest.NetworkWithOptions(t, harness.NetworkOptions{StaticNeighbours: true})
	if !netip.MustParsePrefix("198.18.0.0/15").Contains(n.Gateway) {
		t.Fatalf("gateway %s outside 198.18.0.0/15", n.Gateway)
	}
	if !netip.MustParsePrefix("fd00::/8").Contains(n.Mesh.Addr()) || n.Mesh.Bits() != 16 {
		t.Fatalf("mesh %s is not an fdXX::/16", n.Mesh)
	}
	a := harnesstest.AddHost(t, n, "a")
	b := harnesstest.AddHost(t, n, "b")
	if a.DevName == b.DevName || a.Prefix() == b.Prefix() {
		t.Fatalf("hosts share a device name or prefix: %s/%s, %s/%s", a.DevName, a.Prefix(), b.DevName, b.Prefix())
	}
	for _, h := range []*harness.Host{a, b} {
		if len(h.DevName) > 15 || !n.Mesh.Contains(h.PrivateAddress) {
			t.Errorf("%s: device %q or private address %s out of bounds", h.Name, h.DevName, h.PrivateAddress)
		}
		st, err := os.Stat(h.KeyPath)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file %s: %v, mode %v", h.Name, h.KeyPath, err, st.Mode())
		}
	}

	ctx := context.Background()
	for _, c := range []struct {
		from *harness.Host
		to   netip.Addr
	}{{a, b.Addr}, {b, a.Addr}, {a, n.Gateway}} {
		if _, err := c.from.Ping(ctx, c.to); err != nil {
			t.Errorf("%s cannot reach %s over the underlay: %v", c.from.Name, c.to, err)
		}
	}
}

func TestNATSFromNamespace(t *testing.T) {
	n := harnesstest.Network(t)
	h := harnesstest.AddHost(t, n, "a")
	s := harnesstest.NewNATS(t, n)
	ctx := context.Background()

	// Not started yet: the port is picked, nothing listens.
	if err := h.DialTCP(ctx, s.Addr()); err == nil {
		t.Fatalf("connected to %s before the server started", s.Addr())
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.DialTCP(ctx, s.Addr()); err != nil {
		t.Fatalf("namespace cannot reach NATS: %v", err)
	}

	checkRestartKeepsStore(t, h, s, s.Addr())
}

// TestDebianNATSRestarts: Debian's nats-server, run as a process, stops
// and starts again on its port and store as the embedded server does, so
// the scenarios that stop NATS run on it unchanged.
func TestDebianNATSRestarts(t *testing.T) {
	n := harnesstest.Network(t)
	h := harnesstest.AddHost(t, n, "a")
	p := harnesstest.DebianNATS(t, n.Gateway, t.TempDir(), "")
	if err := h.DialTCP(context.Background(), p.Addr); err != nil {
		t.Fatalf("namespace cannot reach %s: %v", p.Name(), err)
	}
	checkRestartKeepsStore(t, h, p, p.Addr)
}

// checkRestartKeepsStore stops s and starts it again: while it is down h
// cannot connect to addr, and a value put before is there after.
func checkRestartKeepsStore(t *testing.T, h *harness.Host, s harness.NATSServer, addr netip.AddrPort) {
	t.Helper()
	ctx := context.Background()
	bkt := harnesstest.BucketAt(t, s.URL(), "harness-test")
	if _, err := bkt.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if s.Running() {
		t.Fatalf("%s runs after Shutdown", s.Name())
	}
	if err := h.DialTCP(ctx, addr); err == nil {
		t.Fatalf("connected to %s while the server is down", addr)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyContext(t, 10*time.Second, "the value after a restart", func(ctx context.Context) error {
		e, err := bkt.Get(ctx, "k")
		if err != nil {
			return err
		}
		if string(e.Value()) != "v" {
			t.Fatalf("got %q after restart, want v", e.Value())
		}
		return nil
	})
}

func TestCloseLeavesNothing(t *testing.T) {
	harnesstest.Require(t)
	n, err := harness.NewNetwork()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() }) // in case the test fails before its own Close
	var hosts []*harness.Host
	for _, name := range []string{"a", "b", "c"} {
		h, err := n.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	// A process that ignores SIGTERM, so Close has to fall back to SIGKILL.
	p, err := hosts[0].Start("stubborn", "bash", "-c", "trap '' TERM; while :; do sleep 1; done")
	if err != nil {
		t.Fatal(err)
	}
	dir := n.Dir
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if code, ok := p.ExitCode(); !ok || code != -1 {
		t.Errorf("stubborn process: exited=%v code=%d, want killed", ok, code)
	}
	if err := syscall.Kill(p.PID, 0); err == nil {
		t.Errorf("pid %d still exists after Close", p.PID)
	}
	links, err := command("ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(links, n.Suffix) {
		t.Errorf("links with suffix %s remain:\n%s", n.Suffix, links)
	}
	nss, err := command("ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(nss, n.Suffix) {
		t.Errorf("namespaces with suffix %s remain:\n%s", n.Suffix, nss)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("dir %s remains", dir)
	}
	if m, _ := filepath.Glob(filepath.Join("/run/ikto-harness", n.Suffix+"*")); len(m) > 0 {
		t.Errorf("state files remain: %v", m)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func command(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
