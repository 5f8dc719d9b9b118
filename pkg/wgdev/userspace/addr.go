package userspace

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addressReadyTimeout bounds the wait for a new IPv6 address to leave the
// tentative state; it normally takes milliseconds.
const addressReadyTimeout = 3 * time.Second

// ensureAddressUp adds addr to the link unless it is already there (other
// addresses are left alone), sets the link up, and waits until addr can be
// bound, so whatever starts after Open (hooks, services on the tunnel
// address) does not meet EADDRNOTAVAIL.
func ensureAddressUp(name string, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link: %w", err)
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	want := &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
	if findAddress(have, want) == nil {
		a := &netlink.Addr{IPNet: want}
		if addr.Addr().Is6() {
			// The prefix was claimed for this host alone and the link is
			// point-to-point: duplicate detection has nothing to find and
			// would only hold the address back.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add address %s: %w", addr, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	return waitAddressReady(link, want)
}

// waitAddressReady polls until want is no longer tentative. Even with
// NODAD the kernel finishes address setup from a work queue after the link
// comes up, so there is a short window where bind() fails.
func waitAddressReady(link netlink.Link, want *net.IPNet) error {
	if want.IP.To4() != nil {
		return nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(addressReadyTimeout)
	for {
		have, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		a := findAddress(have, want)
		switch {
		case a == nil:
			return fmt.Errorf("address %s vanished from the link", want)
		case a.Flags&unix.IFA_F_DADFAILED != 0:
			return fmt.Errorf("address %s failed duplicate address detection", want)
		case a.Flags&unix.IFA_F_TENTATIVE == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("address %s still tentative after %s", want, addressReadyTimeout)
		}
		<-tick.C
	}
}

func findAddress(have []netlink.Addr, want *net.IPNet) *netlink.Addr {
	wantOnes, _ := want.Mask.Size()
	for i, a := range have {
		if a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		if a.IP.Equal(want.IP) && ones == wantOnes {
			return &have[i]
		}
	}
	return nil
}
