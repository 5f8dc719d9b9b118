package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrMeshOverlap is wrapped by CheckMeshCIDR's error: another interface of
// this host already uses part of the mesh.
var ErrMeshOverlap = errors.New("mesh_cidr overlaps a network of this host")

// hostNet is an address or a route of this host, and its interface.
type hostNet struct {
	iface  string // "" for a route without one (blackhole, unreachable)
	route  bool   // a route's destination, else an interface address
	prefix netip.Prefix
}

func (n hostNet) String() string {
	what, on := "address", "interface "+n.iface
	if n.route {
		what = "route"
	}
	if n.iface == "" {
		on = "no interface"
	}
	return fmt.Sprintf("%s %s on %s", what, n.prefix, on)
}

// CheckMeshCIDR reports, without changing anything, whether the mesh
// overlaps what another interface than device already uses in this
// network namespace: an address inside the mesh, or a route (main table)
// to the mesh or a part of it. Either takes the mesh's packets, or loses
// its own to the mesh's route: two meshes on one host with the same
// mesh_cidr leave the second unreachable. A route that contains the whole
// mesh (a default route, a wider ULA route) is no overlap: the mesh's own
// route is the more specific. The error wraps ErrMeshOverlap and names the
// interfaces, their prefixes and the fix.
func CheckMeshCIDR(mesh netip.Prefix, device string) error {
	nets, err := hostNets()
	if err != nil {
		return fmt.Errorf("check mesh_cidr %s against this host's addresses and routes: %w", mesh, err)
	}
	return checkMeshCIDR(mesh, device, nets)
}

// checkMeshCIDR is CheckMeshCIDR on nets; the mesh's own links are device
// and also (the links of TUNs the agent before left, which Open takes or
// releases).
func checkMeshCIDR(mesh netip.Prefix, device string, nets []hostNet, also ...string) error {
	var clash []string
	ifaces := map[string]bool{}
	for _, n := range nets {
		if n.iface != "" && (n.iface == device || slices.Contains(also, n.iface)) {
			continue // the mesh's own device, left by an earlier run
		}
		inside := mesh.Contains(n.prefix.Addr())
		if n.route {
			inside = inside && n.prefix.Bits() >= mesh.Bits()
		}
		if !inside {
			continue
		}
		clash = append(clash, n.String())
		if n.iface != "" {
			ifaces[n.iface] = true
		}
	}
	if len(clash) == 0 {
		return nil
	}
	remove := ""
	for name := range ifaces {
		remove = ", or take it off " + name
		if len(ifaces) > 1 {
			remove = ", or take it off those interfaces"
		}
	}
	return fmt.Errorf("%w: %s takes in %s; packets for those addresses would go to only one of the two (a second mesh with the same mesh_cidr on a host is cut off): give this mesh another mesh_cidr, the same on every host (ikto-init -m fdXX::/16 draws a config in it)%s",
		ErrMeshOverlap, mesh, strings.Join(clash, ", "), remove)
}

// hostNets are the addresses and main-table routes of this network
// namespace, with their interfaces' names.
func hostNets() ([]hostNet, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []hostNet
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, hostNet{iface: names[a.LinkIndex], prefix: p})
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok {
			out = append(out, hostNet{iface: names[r.LinkIndex], route: true, prefix: p.Masked()})
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false // a default route
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, total := n.Mask.Size()
	if a.Is4In6() {
		a = a.Unmap()
		if total == 128 {
			bits = max(bits-96, 0)
		}
	}
	return netip.PrefixFrom(a, bits), true
}
