package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpAttempts bounds the retries of a route dump the kernel interrupted
// because the table changed underneath it.
const dumpAttempts = 5

// routeKey identifies a route the way the kernel does within one table and
// device: two routes to one prefix with different metrics are two routes.
type routeKey struct {
	dst      netip.Prefix
	priority int
}

func (k routeKey) String() string { return fmt.Sprintf("%s metric %d", k.dst, k.priority) }

// openNetlink returns a rtnetlink handle in ns (netns.None() for the
// current namespace). Strict checking lets the kernel filter route dumps by
// table, protocol and device instead of sending every route of a host that
// may carry a full BGP table; kernels before 4.20 lack it and the library
// filters instead.
func openNetlink(ns netns.NsHandle) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	_ = h.SetStrictCheck(true) // best effort, see above
	return h, nil
}

// listOwned returns the IPv4 and IPv6 routes marked with proto through the
// link with index link (0: any link), in table (0: in every table).
func listOwned(h *netlink.Handle, table, proto, link int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: table, Protocol: netlink.RouteProtocol(proto), LinkIndex: link}
	mask := netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL
	if link > 0 {
		mask |= netlink.RT_FILTER_OIF
	}
	var all []netlink.Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := listRoutes(h, family, filter, mask)
		if err != nil {
			return nil, fmt.Errorf("list routes with protocol %d in table %s: %w", proto, tableName(table), err)
		}
		all = append(all, routes...)
	}
	return all, nil
}

// listRoutes dumps routes, retrying a dump the kernel interrupted. A strict
// dump of a table that has no route yet fails with ENOENT: that is an empty
// table, not an error.
func listRoutes(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var err error
	for range dumpAttempts {
		var routes []netlink.Route
		routes, err = h.RouteListFiltered(family, filter, mask)
		switch {
		case err == nil:
			return routes, nil
		case errors.Is(err, unix.ENOENT) && filter.Table != 0:
			return nil, nil
		case !errors.Is(err, netlink.ErrDumpInterrupted):
			return nil, err
		}
	}
	return nil, err
}

// newRoute is the route to dst through link that cfg asks for. IPv4 routes
// without a gateway get link scope, as `ip route add PREFIX dev DEV` does.
func newRoute(dst netip.Prefix, link int, cfg config) *netlink.Route {
	v6 := dst.Addr().Is6()
	r := &netlink.Route{
		LinkIndex: link,
		Dst:       &net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Table:     cfg.Table,
		Protocol:  netlink.RouteProtocol(cfg.Protocol),
		Priority:  cfg.priority(v6),
		Type:      unix.RTN_UNICAST,
	}
	if !v6 {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// keyOf is the key of a route read from the kernel.
func keyOf(r netlink.Route) (routeKey, bool) {
	if r.Dst == nil {
		return routeKey{}, false
	}
	addr, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return routeKey{}, false
	}
	bits, _ := r.Dst.Mask.Size()
	return routeKey{dst: netip.PrefixFrom(addr.Unmap(), bits), priority: r.Priority}, true
}

// addRoute adds r. When a route to the same prefix and metric is already in
// the table through the same device with no gateway, it carries traffic
// exactly where ours would (a hand-made route, or ours under an earlier
// protocol number), so it is replaced by ours and adopted is true. A route
// there through anything else is someone else's: it is left alone and
// reported.
func addRoute(h *netlink.Handle, r *netlink.Route) (adopted bool, err error) {
	err = h.RouteAdd(r)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return false, err
	}
	family := netlink.FAMILY_V6
	if r.Dst.IP.To4() != nil {
		family = netlink.FAMILY_V4
	}
	// The table is listed whole: a strict dump request may not carry a
	// destination, and this runs only when a route is in the way.
	others, lerr := listRoutes(h, family, &netlink.Route{Table: r.Table}, netlink.RT_FILTER_TABLE)
	if lerr != nil {
		return false, errors.Join(err, fmt.Errorf("look up the route in the way: %w", lerr))
	}
	want, _ := keyOf(*r)
	for _, o := range others {
		if k, ok := keyOf(o); !ok || k != want {
			continue
		}
		if o.LinkIndex == r.LinkIndex && o.Gw == nil && len(o.MultiPath) == 0 {
			if err := h.RouteReplace(r); err != nil {
				return false, fmt.Errorf("replace route through the same device: %w", err)
			}
			return true, nil
		}
		return false, fmt.Errorf("a route to it is already there (%s), not ikto's, left alone: %w", describe(h, o), err)
	}
	return false, err
}

// describe names a route for an operator: its device, gateway and protocol.
func describe(h *netlink.Handle, r netlink.Route) string {
	s := fmt.Sprintf("proto %s", r.Protocol)
	if r.Gw != nil {
		s = fmt.Sprintf("via %s %s", r.Gw, s)
	}
	if r.LinkIndex > 0 {
		name := fmt.Sprint(r.LinkIndex)
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		s = fmt.Sprintf("dev %s %s", name, s)
	}
	return s
}

func tableName(t int) string {
	switch t {
	case 0:
		return "any"
	case defaultTable:
		return "main"
	}
	return fmt.Sprint(t)
}
