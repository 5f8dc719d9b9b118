package userspace

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

// host is one side of the tunnel test: a namespace and the device in it.
type host struct {
	ns       *netnstest.Namespace
	cfg      wgdev.Config
	underlay netip.Addr
	dev      *Device
}

// openIn opens a userspace device inside ns and closes it in cleanup.
func openIn(t *testing.T, ns *netnstest.Namespace, cfg wgdev.Config) *Device {
	t.Helper()
	var d *Device
	err := ns.Do(func() error {
		var err error
		d, err = Open(cfg, slog.New(slog.DiscardHandler))
		return err
	})
	if err != nil {
		t.Fatalf("Open %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close %s: %v", cfg.Name, err)
		}
	})
	return d
}

// TestTunnelBetweenNamespaces is the userspace backend end to end: two
// devices in two namespaces joined by a veth pair, each the other's peer; a
// UDP datagram between their tunnel addresses must arrive, the handshake and
// counters must show in Peers, and wgctrl must find the device by name through
// its UAPI socket.
func TestTunnelBetweenNamespaces(t *testing.T) {
	netnstest.Require(t)
	sfx := netnstest.Suffix(t)
	nsA := netnstest.NewNamespace(t, "ikto-a-"+sfx)
	nsB := netnstest.NewNamespace(t, "ikto-b-"+sfx)
	vethPair(t, nsA, nsB, "ikva"+sfx, "ikvb"+sfx,
		netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24"))

	mesh := fmt.Sprintf("fd00:%s:%s", sfx[:4], sfx[4:]) // a random fd00::/8 /32
	hosts := [2]*host{
		{ns: nsA, underlay: netip.MustParseAddr("198.18.0.1"), cfg: wgdev.Config{Name: "ikwa" + sfx, Address: netip.MustParsePrefix(mesh + ":1::1/32")}},
		{ns: nsB, underlay: netip.MustParseAddr("198.18.0.2"), cfg: wgdev.Config{Name: "ikwb" + sfx, Address: netip.MustParsePrefix(mesh + ":2::1/32")}},
	}
	for _, h := range hosts {
		h.cfg.PrivateKey, h.cfg.ListenPort, h.cfg.MTU = wgtest.PrivateKey(t), 51820, 1420
		h.dev = openIn(t, h.ns, h.cfg)
	}
	// The TUN interface must be in the namespace, not where the test runs.
	if _, err := netlink.LinkByName(hosts[0].cfg.Name); err == nil {
		t.Errorf("%s is visible in the test's own namespace", hosts[0].cfg.Name)
	}

	for i, h := range hosts {
		other := hosts[1-i]
		// No persistent keepalive: it would start a handshake before the
		// other side knows this peer, and the retry comes only 5s later.
		err := h.dev.ConfigurePeers([]wgtypes.PeerConfig{{
			PublicKey:         other.cfg.PrivateKey.PublicKey(),
			Endpoint:          &net.UDPAddr{IP: other.underlay.AsSlice(), Port: other.cfg.ListenPort},
			ReplaceAllowedIPs: true,
			AllowedIPs:        []net.IPNet{prefixNet(netip.PrefixFrom(other.cfg.Address.Addr(), 48).Masked())},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}

	sendOverTunnel(t, hosts[0], hosts[1], 40000)
	sendOverTunnel(t, hosts[1], hosts[0], 40000)

	// An operator flapping the link must not make wireguard-go reopen its
	// UDP sockets from a goroutine on a thread in another namespace.
	flapLink(t, hosts[0])
	sendOverTunnel(t, hosts[0], hosts[1], 40001)
	sendOverTunnel(t, hosts[1], hosts[0], 40001)

	peers, err := hosts[0].dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].LastHandshakeTime.IsZero() || peers[0].ReceiveBytes == 0 || peers[0].TransmitBytes == 0 {
		t.Errorf("peers of %s after traffic = %+v, want one peer with a handshake and traffic", hosts[0].cfg.Name, peers)
	}

	checkWgctrlSees(t, hosts[0].cfg, hosts[1].cfg.PrivateKey.PublicKey())
}

// vethPair joins a and b with a veth pair carrying addrA and addrB (underlay,
// inside 198.18.0.0/15). Deleting a namespace deletes its end, so cleanup is
// the namespaces'.
func vethPair(t *testing.T, a, b *netnstest.Namespace, nameA, nameB string, addrA, addrB netip.Prefix) {
	t.Helper()
	a.IP(t, "link", "add", nameA, "type", "veth", "peer", "name", nameB, "netns", b.Name)
	for _, end := range []struct {
		ns   *netnstest.Namespace
		name string
		addr netip.Prefix
	}{{a, nameA, addrA}, {b, nameB, addrB}} {
		end.ns.IP(t, "addr", "add", end.addr.String(), "dev", end.name)
		end.ns.IP(t, "link", "set", end.name, "up")
	}
}

// sendOverTunnel sends datagrams from one tunnel address to the other until
// one arrives; the first ones may be spent on the handshake.
func sendOverTunnel(t *testing.T, from, to *host, port int) {
	t.Helper()
	dst := &net.UDPAddr{IP: to.cfg.Address.Addr().AsSlice(), Port: port}
	var ln, out *net.UDPConn
	// Sockets keep the namespace they were created in.
	if err := to.ns.Do(func() (err error) { ln, err = net.ListenUDP("udp6", dst); return err }); err != nil {
		t.Fatalf("listen on %s in %s's namespace: %v", dst, to.cfg.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	src := &net.UDPAddr{IP: from.cfg.Address.Addr().AsSlice()}
	if err := from.ns.Do(func() (err error) { out, err = net.DialUDP("udp6", src, dst); return err }); err != nil {
		t.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	t.Cleanup(func() { out.Close() })

	msg := "hello from " + from.cfg.Name
	buf := make([]byte, 100)
	testkit.Eventually(t, 15*time.Second, "datagram "+from.cfg.Name+" → "+to.cfg.Name, func() error {
		if _, err := out.Write([]byte(msg)); err != nil {
			return err
		}
		ln.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, addr, err := ln.ReadFromUDP(buf)
		if err != nil {
			return err
		}
		if got := string(buf[:n]); got != msg || !addr.IP.Equal(src.IP) {
			return fmt.Errorf("got %q from %s", got, addr)
		}
		return nil
	})
}

// flapLink sets h's interface down and up again, as an operator with
// `ip link set` would, and waits for its address to be usable again.
func flapLink(t *testing.T, h *host) {
	t.Helper()
	nl := h.ns.Netlink(t)
	link, err := nl.LinkByName(h.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	if err := h.ns.Do(func() error { return ensureAddressUp(h.cfg.Name, h.cfg.Address) }); err != nil {
		t.Fatalf("bring %s back: %v", h.cfg.Name, err)
	}
}

// checkWgctrlSees asks wgctrl, as `wg show` would, for the device by name.
func checkWgctrlSees(t *testing.T, cfg wgdev.Config, peer wgtypes.Key) {
	t.Helper()
	c, err := wgctrl.New()
	if err != nil {
		t.Fatalf("wgctrl: %v", err)
	}
	defer c.Close()
	d, err := c.Device(cfg.Name)
	if err != nil {
		t.Fatalf("wgctrl Device(%s): %v", cfg.Name, err)
	}
	if d.PublicKey != cfg.PrivateKey.PublicKey() || d.ListenPort != cfg.ListenPort {
		t.Errorf("wgctrl sees key %s port %d, want %s %d", d.PublicKey, d.ListenPort, cfg.PrivateKey.PublicKey(), cfg.ListenPort)
	}
	if len(d.Peers) != 1 || d.Peers[0].PublicKey != peer {
		t.Errorf("wgctrl sees peers %+v, want just %s", d.Peers, peer)
	}
}

func prefixNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
