package userspace

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

// socketTest is the ground of a socket test: a namespace of its own and the
// config of a device named for this run, whose socket is socketPath(cfg.Name).
// tag tells the tests' names apart.
func socketTest(t *testing.T, tag string) (*netnstest.Namespace, wgdev.Config) {
	t.Helper()
	netnstest.Require(t)
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "ikto-"+tag+"-"+sfx)
	return ns, wgdev.Config{Name: "ikw" + tag + sfx, PrivateKey: wgtest.PrivateKey(t), ListenPort: 51820, MTU: 1420, Address: netip.MustParsePrefix("fd00:5::1/64")}
}

// staleSocket leaves a socket file nobody listens on, as a crashed agent does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll("/var/run/wireguard", 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	t.Cleanup(func() { os.Remove(path) })
}

// TestStaleSocketIsReplacedAndCloseCleansUp: Open takes over a dead socket
// file, wgctrl reaches the new device through it, and Close (twice) removes
// the socket and the interface.
func TestStaleSocketIsReplacedAndCloseCleansUp(t *testing.T) {
	ns, cfg := socketTest(t, "s")
	path := socketPath(cfg.Name)
	staleSocket(t, path)

	d := openIn(t, ns, cfg)

	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.Device(cfg.Name); err != nil || got.PublicKey != cfg.PrivateKey.PublicKey() {
		t.Fatalf("wgctrl Device(%s) = %+v, %v; want key %s", cfg.Name, got, err, cfg.PrivateKey.PublicKey())
	}

	for i := range 2 {
		if err := d.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket %s still there after Close: %v", path, err)
	}
	if _, err := ns.Netlink(t).LinkByName(cfg.Name); err == nil {
		t.Errorf("interface %s still there after Close", cfg.Name)
	}
}

// TestLiveSocketRefusedAndNothingLeft: a socket another process still serves
// is not stolen, and the failed Open leaves no interface behind.
func TestLiveSocketRefusedAndNothingLeft(t *testing.T) {
	ns, cfg := socketTest(t, "l")
	path := socketPath(cfg.Name)
	if err := os.MkdirAll("/var/run/wireguard", 0o755); err != nil {
		t.Fatal(err)
	}
	live, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })

	err = ns.Do(func() error {
		d, err := Open(cfg, nil)
		if err == nil {
			d.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open = %v, want an error naming %s", err, path)
	}
	if _, err := ns.Netlink(t).LinkByName(cfg.Name); err == nil {
		t.Errorf("interface %s left behind by a failed Open", cfg.Name)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the live socket was touched: %v", err)
	}
}

// TestEnsureAddressLeavesOthers checks ensureAddressUp alone: an address that
// is already there is not added twice and others stay.
func TestEnsureAddressLeavesOthers(t *testing.T) {
	netnstest.Require(t)
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "ikto-e-"+sfx)
	h := ns.Netlink(t)
	name := "ikde" + sfx
	// A veth, because the dummy module is not everywhere.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "ikdf" + sfx}); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := netlink.ParseAddr("fd00:6::9/64")
	if err := h.AddrAdd(link, other); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParsePrefix("fd00:5::1/48")
	for range 2 {
		if err := ns.Do(func() error { return ensureAddressUp(name, want) }); err != nil {
			t.Fatalf("ensureAddressUp: %v", err)
		}
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.IPNet.String())
		}
	}
	if len(got) != 2 || !contains(got, "fd00:5::1/48") || !contains(got, "fd00:6::9/64") {
		t.Errorf("addresses = %v, want fd00:5::1/48 and fd00:6::9/64", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
