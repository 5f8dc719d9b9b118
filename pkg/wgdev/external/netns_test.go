package external

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

// A real wireguard-go started by hand with a peer of its own is adopted:
// key, port and address are set, the peer stays, a peer added through the
// device lands in the process, and closing the device leaves the process
// running with every peer. Opening it again writes nothing new.
func TestAdoptRealWireguardGo(t *testing.T) {
	netnstest.Require(t, "wireguard-go")
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "iktx-"+sfx)
	name := "iktx" + sfx
	wggo := ns.StartWireguardGo(t, name)

	// The socket lives in the shared filesystem: wgctrl reaches it from the
	// root namespace, as wg(8) would.
	client, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	old := wgtypes.PeerConfig{PublicKey: wgtest.PrivateKey(t).PublicKey(), Endpoint: &net.UDPAddr{IP: net.IPv4(198, 18, 9, 9), Port: 51820},
		AllowedIPs: []net.IPNet{wgtest.IPNet(t, "fd10:1::/48")}}
	if err := client.ConfigureDevice(name, wgtypes.Config{Peers: []wgtypes.PeerConfig{old}}); err != nil {
		t.Fatalf("give the external device a peer: %v", err)
	}
	if !SocketLive(name) || SocketLive(name+"x") {
		t.Fatalf("SocketLive(%s) = %t, SocketLive(%sx) = %t; want true, false", name, SocketLive(name), name, SocketLive(name+"x"))
	}

	priv := wgtest.PrivateKey(t)
	cfg := wgdev.Config{Name: name, PrivateKey: priv, ListenPort: 51820, Address: netip.MustParsePrefix("fd10:2::1/16"), MTU: 1400}
	var d *Device
	if err := ns.Do(func() (err error) { d, err = Open(cfg); return err }); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if d.Backend() != wgdev.KindExternal {
		t.Errorf("Backend() = %q, want %q", d.Backend(), wgdev.KindExternal)
	}
	added := wgtypes.PeerConfig{PublicKey: wgtest.PrivateKey(t).PublicKey(), AllowedIPs: []net.IPNet{wgtest.IPNet(t, "fd10:3::/48")}}
	if err := d.ConfigurePeers([]wgtypes.PeerConfig{added}); err != nil {
		t.Fatal(err)
	}
	peers, err := d.Peers()
	if err != nil || len(peers) != 2 {
		t.Fatalf("peers = %d (%v), want the old one and the added one", len(peers), err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	if !wggo.Running() || !SocketLive(name) {
		t.Fatal("closing the adopted device stopped wireguard-go")
	}
	dev, err := client.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	if dev.PrivateKey != priv || dev.ListenPort != 51820 || len(dev.Peers) != 2 {
		t.Errorf("after Close: key ok %t, port %d, %d peers; want ours, 51820, 2", dev.PrivateKey == priv, dev.ListenPort, len(dev.Peers))
	}
	link := ns.IP(t, "-o", "addr", "show", "dev", name)
	if !strings.Contains(link, "fd10:2::1/16") {
		t.Errorf("address not on the link: %s", link)
	}
	if mtu := ns.IP(t, "-o", "link", "show", "dev", name); !strings.Contains(mtu, "mtu 1400") || !strings.Contains(mtu, ",UP") {
		t.Errorf("link not up with mtu 1400: %s", mtu)
	}

	// Adopting again (the agent restarted) works on a device that already
	// has our key, port and address; TestOpen pins that nothing is written.
	before := time.Now()
	if err := ns.Do(func() (err error) { d, err = Open(cfg); return err }); err != nil {
		t.Fatalf("Open again: %v", err)
	}
	d.Close()
	if !wggo.Running() {
		t.Fatal("wireguard-go died on the second adoption")
	}
	t.Logf("second adoption took %s", time.Since(before).Round(time.Microsecond))
}

// With no link of that name in the caller's namespace, a live socket from
// another namespace is not adopted.
func TestAdoptNeedsTheLinkHere(t *testing.T) {
	netnstest.Require(t, "wireguard-go")
	sfx := netnstest.Suffix(t)
	there := netnstest.NewNamespace(t, "iktx-"+sfx+"a")
	here := netnstest.NewNamespace(t, "iktx-"+sfx+"b")
	name := "iktx" + sfx
	there.StartWireguardGo(t, name)
	cfg := wgdev.Config{Name: name, PrivateKey: wgtest.PrivateKey(t), ListenPort: 51820, Address: netip.MustParsePrefix("fd10:2::1/16")}
	err := here.Do(func() error { _, err := Open(cfg); return err })
	if err == nil || !strings.Contains(err.Error(), "no link "+name+" in this network namespace") {
		t.Errorf("Open from another namespace = %v, want an error", err)
	}
}
