package backend

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/kernel"
)

func TestPreflight(t *testing.T) {
	ok := probes{
		netAdmin: func() (bool, error) { return true, nil },
		tun:      func() error { return nil },
		udpFree:  func(int) error { return nil },
		inspect:  func(wgdev.Config) found { return found{} },
		nets: func() ([]hostNet, error) {
			return []hostNet{{iface: "eth0", prefix: netip.MustParsePrefix("198.18.0.2/24")}}, nil
		},
	}
	cfg := wgdev.Config{Name: "wg-test", ListenPort: 51820, Address: netip.MustParsePrefix("fd10:1::1/16")}
	for _, tc := range []struct {
		name   string
		kind   wgdev.Kind
		change func(*probes)
		want   []string // in the error; none: no error
	}{
		{name: "all there", kind: wgdev.KindAuto, change: func(*probes) {}},
		{name: "no CAP_NET_ADMIN", kind: wgdev.KindAuto, change: func(p *probes) { p.netAdmin = func() (bool, error) { return false, nil } },
			want: []string{"CAP_NET_ADMIN", "run ikto-agent as root"}},
		{name: "no TUN for userspace", kind: wgdev.KindUserspace, change: func(p *probes) { p.tun = func() error { return syscall.ENOENT } },
			want: []string{"/dev/net/tun", "modprobe tun"}},
		{name: "no TUN, auto may use the kernel", kind: wgdev.KindAuto, change: func(p *probes) { p.tun = func() error { return syscall.ENOENT } }},
		{name: "port taken", kind: wgdev.KindAuto, change: func(p *probes) { p.udpFree = func(int) error { return syscall.EADDRINUSE } },
			want: []string{"UDP port 51820 is in use", "wg_port"}},
		{name: "adopted kernel link needs nothing", kind: wgdev.KindAuto, change: func(p *probes) {
			p.inspect = func(wgdev.Config) found { return found{linkType: kernel.LinkType} }
			p.netAdmin = func() (bool, error) { return false, nil }
			p.udpFree = func(int) error { return syscall.EADDRINUSE }
		}},
		{name: "name taken", kind: wgdev.KindAuto, change: func(p *probes) { p.inspect = func(wgdev.Config) found { return found{linkType: "dummy"} } },
			want: []string{"not WireGuard"}},
		{name: "another mesh on the mesh_cidr, adopted device or not", kind: wgdev.KindAuto, change: func(p *probes) {
			p.inspect = func(wgdev.Config) found { return found{linkType: kernel.LinkType} }
			p.nets = func() ([]hostNet, error) {
				return []hostNet{{iface: "wg-other", route: true, prefix: netip.MustParsePrefix("fd10::/16")}}, nil
			}
		}, want: []string{"mesh_cidr overlaps", "fd10::/16 takes in", "route fd10::/16 on interface wg-other", "another mesh_cidr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.change(&p)
			err := preflight(tc.kind, cfg, p)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("preflight = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("preflight = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !errors.Is(err, ErrCannotOpen) && !errors.Is(err, ErrNameTaken) && !errors.Is(err, ErrMeshOverlap) {
				t.Errorf("error %v matches none of ErrCannotOpen, ErrNameTaken, ErrMeshOverlap", err)
			}
		})
	}
}

// The real port probe: a port some socket holds is refused, and free again
// once it is let go.
func TestUDPFree(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	if err := udpFree(port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("udpFree(%d) while bound = %v, want EADDRINUSE", port, err)
	}
	c.Close()
	if err := udpFree(port); err != nil {
		t.Errorf("udpFree(%d) after close = %v, want nil", port, err)
	}
}

func TestCheckMeshCIDR(t *testing.T) {
	mesh := netip.MustParsePrefix("fd10::/16")
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		nets []hostNet
		want []string // in the error; none: no overlap
	}{
		{name: "nothing of the mesh here", nets: []hostNet{
			{iface: "eth0", prefix: p("198.18.0.2/24")}, {iface: "eth0", route: true, prefix: p("198.18.0.0/24")},
			{iface: "eth0", prefix: p("fe80::1/64")}, {iface: "eth0", route: true, prefix: p("fe80::/64")},
			{iface: "lo", prefix: p("::1/128")},
		}},
		{name: "routes that contain the whole mesh", nets: []hostNet{
			{iface: "eth0", route: true, prefix: p("::/0")}, {iface: "eth1", route: true, prefix: p("fd00::/8")},
		}},
		{name: "the mesh's own device", nets: []hostNet{
			{iface: "wg-ikto", prefix: p("fd10:1::1/16")}, {iface: "wg-ikto", route: true, prefix: p("fd10::/16")},
		}},
		{name: "another mesh with the same mesh_cidr", nets: []hostNet{
			{iface: "wg-other", prefix: p("fd10:2::1/16")}, {iface: "wg-other", route: true, prefix: p("fd10::/16")},
		}, want: []string{"mesh_cidr overlaps", "fd10::/16 takes in", "address fd10:2::1/16 on interface wg-other", "route fd10::/16 on interface wg-other",
			"another mesh_cidr", "take it off wg-other"}},
		{name: "a smaller network inside the mesh", nets: []hostNet{{iface: "eth1", route: true, prefix: p("fd10:5::/64")}},
			want: []string{"route fd10:5::/64 on interface eth1"}},
		{name: "an address of the mesh on a wider network", nets: []hostNet{{iface: "eth1", prefix: p("fd10:5::7/8")}},
			want: []string{"address fd10:5::7/8 on interface eth1"}},
		{name: "a blackhole route", nets: []hostNet{{route: true, prefix: p("fd10:9::/48")}},
			want: []string{"route fd10:9::/48 on no interface"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMeshCIDR(mesh, "wg-ikto", tc.nets)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("checkMeshCIDR = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrMeshOverlap) {
				t.Fatalf("checkMeshCIDR = %v, want ErrMeshOverlap", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// hostNets reads this namespace for real: whatever is here, loopback's
// address is among what it finds.
func TestHostNets(t *testing.T) {
	nets, err := hostNets()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.iface == "lo" && !n.route && n.prefix == netip.MustParsePrefix("127.0.0.1/8") {
			return
		}
	}
	t.Errorf("hostNets = %v, want lo's 127.0.0.1/8 among them", nets)
}
