// Package nstest gives the firewall hook's tests network namespaces of their
// own and links between them.
//
// The namespaces are unnamed: each exists only through the file descriptor
// the test holds (and the threads inside it), so two test runs can never
// pick the same one, nothing shows up in /var/run/netns, and a run that is
// killed leaves nothing behind: the kernel frees a namespace when its last
// reference goes. Interface names and addresses inside them cannot clash
// with the host's or another run's either.
package nstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireEnv, set to 1, turns a missing prerequisite into a failure
// instead of a skip (CI sets it, as for the integration tests).
const RequireEnv = "IKTO_REQUIRE_INTEGRATION"

// Require skips the test (or fails it, under IKTO_REQUIRE_INTEGRATION=1)
// when the process cannot create network namespaces.
func Require(t testing.TB) {
	t.Helper()
	var missing string
	if os.Geteuid() != 0 {
		missing = "not root (network namespaces and nftables need root; run with sudo)"
	}
	if missing == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s=1 and a prerequisite is missing: %s", RequireEnv, missing)
	}
	t.Skipf("prerequisite missing: %s", missing)
}

// NS is one network namespace and a netlink handle inside it.
type NS struct {
	Handle netns.NsHandle
	NL     *netlink.Handle
}

// New creates a namespace with its loopback up; t.Cleanup releases it.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	var h netns.NsHandle
	err := onLockedThread(func() error {
		var err error
		h, err = netns.New()
		return err
	})
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	ns := &NS{Handle: h, NL: nl}
	t.Cleanup(func() {
		nl.Close()
		ns.Handle.Close()
	})
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring up lo: %v", err)
	}
	return ns
}

// Fd is the namespace's file descriptor, for nftables.WithNetNSFd.
func (ns *NS) Fd() int { return int(ns.Handle) }

// Do runs fn on a thread inside the namespace. Sockets fn opens stay in it.
func (ns *NS) Do(fn func() error) error {
	return onLockedThread(func() error {
		if err := netns.Set(ns.Handle); err != nil {
			return fmt.Errorf("enter namespace: %w", err)
		}
		return fn()
	})
}

// onLockedThread runs fn on a goroutine locked to its thread and never
// unlocked, so the runtime discards the thread afterwards instead of
// handing a thread in another namespace to some other goroutine.
func onLockedThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- fn()
	}()
	return <-done
}

// Veth joins a (interface aName) and b (interface bName) with a veth pair,
// both ends up. The pair goes with the namespaces.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.Handle),
	}
	if err := a.NL.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s-%s: %v", aName, bName, err)
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		link, err := end.ns.NL.LinkByName(end.name)
		if err == nil {
			err = end.ns.NL.LinkSetUp(link)
		}
		if err != nil {
			t.Fatalf("bring up %s: %v", end.name, err)
		}
	}
}

// AddAddr puts addr on link. IPv6 addresses skip duplicate address
// detection, which would keep them unusable for a second or two.
func (ns *NS) AddAddr(t testing.TB, link string, addr netip.Prefix) {
	t.Helper()
	l, err := ns.NL.LinkByName(link)
	if err != nil {
		t.Fatalf("find %s: %v", link, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := ns.NL.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", addr, link, err)
	}
}

// AddRoute routes dst out of link.
func (ns *NS) AddRoute(t testing.TB, dst netip.Prefix, link string) {
	t.Helper()
	l, err := ns.NL.LinkByName(link)
	if err != nil {
		t.Fatalf("find %s: %v", link, err)
	}
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
	}
	if err := ns.NL.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, link, err)
	}
}

// MAC returns link's hardware address.
func (ns *NS) MAC(t testing.TB, link string) net.HardwareAddr {
	t.Helper()
	l, err := ns.NL.LinkByName(link)
	if err != nil {
		t.Fatalf("find %s: %v", link, err)
	}
	return l.Attrs().HardwareAddr
}

// Neigh pins a permanent neighbour entry for addr on link, so that no
// neighbour discovery runs there: a test that counts packets sees only its
// own.
func (ns *NS) Neigh(t testing.TB, link string, addr netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	l, err := ns.NL.LinkByName(link)
	if err != nil {
		t.Fatalf("find %s: %v", link, err)
	}
	family := netlink.FAMILY_V6
	if addr.Is4() {
		family = netlink.FAMILY_V4
	}
	n := &netlink.Neigh{
		LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
		IP: addr.AsSlice(), HardwareAddr: mac,
	}
	if err := ns.NL.NeighSet(n); err != nil {
		t.Fatalf("neighbour %s on %s: %v", addr, link, err)
	}
}

// Sysctl writes value to /proc/sys/<key> as seen from the namespace
// (net.* keys are per namespace).
func (ns *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	})
	if err != nil {
		t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

// ListenUDP opens a UDP socket inside the namespace; t.Cleanup closes it.
func (ns *NS) ListenUDP(t testing.TB, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
