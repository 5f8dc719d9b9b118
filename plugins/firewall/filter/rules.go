package filter

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// ifNameSize is IFNAMSIZ: iifname compares a NUL-padded buffer of this size.
const ifNameSize = unix.IFNAMSIZ

// Offsets of the addresses in the IPv4 and IPv6 headers, and of the
// destination port in the UDP header.
const (
	ip4SrcOffset = 12
	ip4DstOffset = 16
	ip6SrcOffset = 8
	ip6DstOffset = 24
	udpDstOffset = 2
)

// chains returns the two base chains. Both accept by default: ikto only
// adds drops, so it never overrides what the host's own firewall decides.
func chains(t *nftables.Table) (input, forward *nftables.Chain) {
	accept := nftables.ChainPolicyAccept
	base := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return &nftables.Chain{
			Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		}
	}
	return base(ChainInput, nftables.ChainHookInput), base(ChainForward, nftables.ChainHookForward)
}

// wgPortRule drops UDP to the WireGuard port from any address of one
// family that is not in that family's endpoint set.
func (r ruleset) wgPortRule(c *nftables.Chain, endpoints *nftables.Set, v4 bool) *nftables.Rule {
	fam, src, comment := byte(unix.NFPROTO_IPV6), uint32(ip6SrcOffset), "ikto: WireGuard port only from peer endpoints (IPv6)"
	if v4 {
		fam, src, comment = unix.NFPROTO_IPV4, ip4SrcOffset, "ikto: WireGuard port only from peer endpoints (IPv4)"
	}
	port := binary.BigEndian.AppendUint16(nil, r.port)
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: udpDstOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		loadAddr(src, v4),
		notIn(endpoints),
	}
	return rule(c, comment, append(exprs, countAndDrop(CounterWGPortDrops)...))
}

// prefixRule drops packets that arrive on the WireGuard device for this
// host's prefix from a source outside every peer's prefix.
func (r ruleset) prefixRule(c *nftables.Chain, prefixes *nftables.Set) *nftables.Rule {
	v4 := r.meshIs4()
	fam, src, dst := byte(unix.NFPROTO_IPV6), uint32(ip6SrcOffset), uint32(ip6DstOffset)
	if v4 {
		fam, src, dst = unix.NFPROTO_IPV4, ip4SrcOffset, ip4DstOffset
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifName(r.device)},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
	}
	exprs = append(exprs, inPrefix(dst, r.self)...)
	exprs = append(exprs, loadAddr(src, v4), notIn(prefixes))
	return rule(c, "ikto: this host's prefix only from peer prefixes", append(exprs, countAndDrop(CounterPrefixDrops)...))
}

func rule(c *nftables.Chain, comment string, exprs []expr.Any) *nftables.Rule {
	return &nftables.Rule{
		Table: c.Table, Chain: c, Exprs: exprs,
		// nft list shows the comment, so an operator sees why a rule is there.
		UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
	}
}

func loadAddr(offset uint32, v4 bool) *expr.Payload {
	n := uint32(16)
	if v4 {
		n = 4
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n}
}

// inPrefix matches the address at offset against p (ip daddr p).
func inPrefix(offset uint32, p netip.Prefix) []expr.Any {
	load := loadAddr(offset, p.Addr().Is4())
	if p.Bits() == p.Addr().BitLen() {
		return []expr.Any{load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()}}
	}
	mask := make([]byte, len(p.Addr().AsSlice()))
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func notIn(s *nftables.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true}
}

func countAndDrop(counter string) []expr.Any {
	return []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counter},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// ifName is name as iifname compares it: NUL-padded to IFNAMSIZ.
func ifName(name string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return b
}
