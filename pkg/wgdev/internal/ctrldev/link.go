package ctrldev

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// LinkOps is the part of netlink the backends use; tests substitute a fake.
type LinkOps interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
}

// NetlinkOps calls the netlink package functions, which open a fresh socket
// per request in the calling thread's network namespace.
type NetlinkOps struct{}

func (NetlinkOps) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (NetlinkOps) LinkAdd(link netlink.Link) error              { return netlink.LinkAdd(link) }
func (NetlinkOps) LinkSetMTU(link netlink.Link, mtu int) error  { return netlink.LinkSetMTU(link, mtu) }
func (NetlinkOps) LinkSetUp(link netlink.Link) error            { return netlink.LinkSetUp(link) }
func (NetlinkOps) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return netlink.AddrList(link, family)
}
func (NetlinkOps) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	return netlink.AddrAdd(link, addr)
}

// PrepareLink makes sure of the link's side of the device: the MTU when mtu
// is set, the address (added beside any others, never replacing them) and
// the link up. Each step is skipped when it is already so, except up, which
// is idempotent.
func PrepareLink(links LinkOps, link netlink.Link, mtu int, addr netip.Prefix) error {
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := links.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set mtu %d: %w", mtu, err)
		}
	}
	if err := ensureAddress(links, link, addr); err != nil {
		return err
	}
	if err := links.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	return nil
}

// ensureAddress adds addr to link unless it is already there, leaving other
// addresses alone.
func ensureAddress(links LinkOps, link netlink.Link, addr netip.Prefix) error {
	have, err := links.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	want := &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
	for _, a := range have {
		if a.IPNet != nil && a.IP.Equal(want.IP) && maskOnes(a.Mask) == addr.Bits() {
			return nil
		}
	}
	if err := links.AddrAdd(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("add address %s: %w", addr, err)
	}
	return nil
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}
