package fake

import (
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// applyLocked applies one delta the way the kernel's WG_CMD_SET_DEVICE does.
func (d *Device) applyLocked(c *wgtypes.PeerConfig) {
	// The kernel silently skips a peer carrying the device's own key.
	if d.hasKey && c.PublicKey == d.PublicKey() {
		return
	}
	p, ok := d.peers[c.PublicKey]
	if c.Remove {
		if ok {
			d.removeLocked(p)
		}
		return
	}
	if !ok {
		if c.UpdateOnly {
			return
		}
		p = &wgtypes.Peer{PublicKey: c.PublicKey}
		d.peers[c.PublicKey] = p
	}
	if c.PresharedKey != nil {
		p.PresharedKey = *c.PresharedKey
	}
	if c.Endpoint != nil {
		p.Endpoint = cloneUDPAddr(c.Endpoint)
	}
	if c.PersistentKeepaliveInterval != nil {
		p.PersistentKeepaliveInterval = *c.PersistentKeepaliveInterval
	}
	if c.ReplaceAllowedIPs {
		for _, n := range p.AllowedIPs {
			delete(d.owners, prefixOf(n))
		}
		p.AllowedIPs = nil
	}
	for _, n := range c.AllowedIPs {
		d.addAllowedIPLocked(p, n)
	}
}

// addAllowedIPLocked gives prefix n to p. Allowed IPs live in one routing
// table per device, so a prefix held by another peer moves to p, and the
// kernel stores it masked.
func (d *Device) addAllowedIPLocked(p *wgtypes.Peer, n net.IPNet) {
	n = maskedIPNet(n)
	k := prefixOf(n)
	if owner, ok := d.owners[k]; ok {
		if owner == p.PublicKey {
			return
		}
		if prev := d.peers[owner]; prev != nil {
			prev.AllowedIPs = withoutIPNet(prev.AllowedIPs, k)
		}
	}
	d.owners[k] = p.PublicKey
	p.AllowedIPs = append(p.AllowedIPs, n)
}

func (d *Device) removeLocked(p *wgtypes.Peer) {
	for _, n := range p.AllowedIPs {
		delete(d.owners, prefixOf(n))
	}
	delete(d.peers, p.PublicKey)
}

func withoutIPNet(list []net.IPNet, key netip.Prefix) []net.IPNet {
	out := list[:0]
	for _, n := range list {
		if prefixOf(n) != key {
			out = append(out, n)
		}
	}
	return out
}

// maskedIPNet normalises n as the kernel reports it: host bits cleared and
// IPv4 in its 4-byte form.
func maskedIPNet(n net.IPNet) net.IPNet {
	ip := n.IP
	if v4 := ip.To4(); v4 != nil && len(n.Mask) == net.IPv4len {
		ip = v4
	}
	out := net.IPNet{IP: make(net.IP, len(ip)), Mask: append(net.IPMask(nil), n.Mask...)}
	if len(ip) == len(n.Mask) {
		for i := range ip {
			out.IP[i] = ip[i] & n.Mask[i]
		}
		return out
	}
	// A mask that does not match the address family: keep it as given rather
	// than guess; the real backends would reject it.
	copy(out.IP, ip)
	return out
}

// prefixOf is n as a comparable map key. A malformed n maps to the invalid
// prefix, which is still a usable (shared) key.
func prefixOf(n net.IPNet) netip.Prefix {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, ones)
}

func cloneUDPAddr(a *net.UDPAddr) *net.UDPAddr {
	c := *a
	c.IP = append(net.IP(nil), a.IP...)
	return &c
}

func clonePeer(p *wgtypes.Peer) wgtypes.Peer {
	c := *p
	if p.Endpoint != nil {
		c.Endpoint = cloneUDPAddr(p.Endpoint)
	}
	if p.AllowedIPs != nil {
		c.AllowedIPs = make([]net.IPNet, len(p.AllowedIPs))
		for i, n := range p.AllowedIPs {
			c.AllowedIPs[i] = net.IPNet{IP: append(net.IP(nil), n.IP...), Mask: append(net.IPMask(nil), n.Mask...)}
		}
	}
	return c
}
