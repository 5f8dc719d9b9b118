// Package reconcile turns "which peers the bucket says" and "which peers the
// device has" into the smallest list of per-peer changes, and applies it in one
// device call. PlanPeers is pure; Reconciler keeps a cache of the device's state
// so a watch event costs a diff of the peers it changed, not a device dump.
package reconcile

import (
	"net"
	"net/netip"
	"slices"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Spec is one peer as ikto configures it.
type Spec struct {
	PublicKey  wgtypes.Key
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix // sorted
	Keepalive  time.Duration
}

// Equal reports whether two specs would configure the device the same way.
func (s Spec) Equal(o Spec) bool {
	return s.PublicKey == o.PublicKey && s.Endpoint == o.Endpoint && s.Keepalive == o.Keepalive &&
		slices.Equal(s.AllowedIPs, o.AllowedIPs)
}

// Plan is the difference between desired and actual, by public key.
type Plan struct {
	Add, Update []Spec
	Remove      []wgtypes.Key
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Add)+len(p.Update)+len(p.Remove) == 0 }

// PlanPeers computes the changes that make actual equal desired. Peers on the
// device that are not desired are removed: the device is ikto's alone. The
// result is sorted by key so it is deterministic.
func PlanPeers(desired, actual map[wgtypes.Key]Spec) Plan {
	var p Plan
	for k, want := range desired {
		have, ok := actual[k]
		switch {
		case !ok:
			p.Add = append(p.Add, want)
		case !want.Equal(have):
			p.Update = append(p.Update, want)
		}
	}
	for k := range actual {
		if _, ok := desired[k]; !ok {
			p.Remove = append(p.Remove, k)
		}
	}
	p.sort()
	return p
}

func compareKeys(a, b wgtypes.Key) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// PeerConfigs is the plan as wgctrl deltas: adds and updates replace the
// peer's allowed-ips, removals remove; nothing else on the device is touched.
func (p Plan) PeerConfigs() []wgtypes.PeerConfig { return p.PeerConfigsOver(nil) }

// PeerConfigsOver is PeerConfigs for a device known to hold actual: an
// update leaves alone the allowed-ips of a peer that already has them.
// Replacing them empties the peer's set for a moment, and WireGuard drops
// what arrives from the peer meanwhile ("disallowed source address") — a
// first packet, say, as its peer's first contact ends.
func (p Plan) PeerConfigsOver(actual map[wgtypes.Key]Spec) []wgtypes.PeerConfig {
	out := make([]wgtypes.PeerConfig, 0, len(p.Add)+len(p.Update)+len(p.Remove))
	for _, s := range p.Add {
		out = append(out, s.peerConfig(false))
	}
	for _, s := range p.Update {
		pc := s.peerConfig(true)
		if have, ok := actual[s.PublicKey]; ok && slices.Equal(have.AllowedIPs, s.AllowedIPs) {
			pc.ReplaceAllowedIPs, pc.AllowedIPs = false, nil
		}
		out = append(out, pc)
	}
	for _, k := range p.Remove {
		out = append(out, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	return out
}

func (s Spec) peerConfig(updateOnly bool) wgtypes.PeerConfig {
	ka := s.Keepalive
	pc := wgtypes.PeerConfig{
		PublicKey:                   s.PublicKey,
		UpdateOnly:                  updateOnly,
		ReplaceAllowedIPs:           true,
		PersistentKeepaliveInterval: &ka,
		AllowedIPs:                  make([]net.IPNet, 0, len(s.AllowedIPs)),
	}
	if s.Endpoint.IsValid() {
		pc.Endpoint = net.UDPAddrFromAddrPort(s.Endpoint)
	}
	for _, p := range s.AllowedIPs {
		pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return pc
}

// FromDevice converts what a device reports into specs.
func FromDevice(peers []wgtypes.Peer) map[wgtypes.Key]Spec {
	out := make(map[wgtypes.Key]Spec, len(peers))
	for _, p := range peers {
		s := Spec{PublicKey: p.PublicKey, Keepalive: p.PersistentKeepaliveInterval}
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			s.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		for _, n := range p.AllowedIPs {
			if pfx, ok := prefixOf(n); ok {
				s.AllowedIPs = append(s.AllowedIPs, pfx)
			}
		}
		SortPrefixes(s.AllowedIPs)
		out[p.PublicKey] = s
	}
	return out
}

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	if a.Is4() && ones > 32 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// SortPrefixes orders prefixes so equal sets compare equal.
func SortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}
