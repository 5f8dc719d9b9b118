package filter

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// item is one member of a set as the hook writes it: an address (end
// invalid), or a prefix written as the interval [start, end). end is also
// invalid for an interval that runs to the family's last address, which
// nftables writes without an end element.
type item struct {
	start, end netip.Addr
}

func (it item) String() string {
	if it.end.IsValid() {
		return it.start.String() + "-" + it.end.String()
	}
	return it.start.String()
}

// members is the content of every set, by set name.
type members map[string]map[item]bool

func (m members) add(set string, it item) {
	if m[set] == nil {
		m[set] = map[item]bool{}
	}
	m[set][it] = true
}

// count returns how many items all sets hold.
func (m members) count() int {
	n := 0
	for _, items := range m {
		n += len(items)
	}
	return n
}

// desiredMembers is what the sets must hold for these peers. Peers whose
// endpoint or prefix is unusable are skipped and reported, so one bad
// record cannot stop the others from being let in.
func (r ruleset) desiredMembers(peers []sdk.Peer) (members, []error) {
	m := members{SetEndpoints4: {}, SetEndpoints6: {}, SetPrefixes: {}}
	var skipped []error
	var prefixes []netip.Prefix
	for _, p := range peers {
		addr := p.Endpoint.Addr().Unmap().WithZone("")
		switch {
		case !addr.IsValid() || addr.IsUnspecified():
			skipped = append(skipped, fmt.Errorf("peer %q: endpoint %q has no usable address", p.Name, p.Endpoint))
		case addr.Is4():
			m.add(SetEndpoints4, item{start: addr})
		default:
			m.add(SetEndpoints6, item{start: addr})
		}
		switch {
		case !p.Prefix.IsValid():
			skipped = append(skipped, fmt.Errorf("peer %q: no prefix", p.Name))
		case p.Prefix.Addr().Is4() != r.meshIs4():
			skipped = append(skipped, fmt.Errorf("peer %q: prefix %s is not of the mesh's address family", p.Name, p.Prefix))
		default:
			prefixes = append(prefixes, p.Prefix.Masked())
		}
	}
	for _, p := range outermostPrefixes(prefixes) {
		m.add(SetPrefixes, prefixItem(p))
	}
	return m, skipped
}

// outermostPrefixes drops duplicates and prefixes inside another one: an
// interval set refuses overlapping intervals, and the union is the same.
// Accepted records never overlap; this keeps one bad record from failing
// every Apply.
func outermostPrefixes(ps []netip.Prefix) []netip.Prefix {
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	var out []netip.Prefix
	for _, p := range sorted {
		if len(out) > 0 && out[len(out)-1].Contains(p.Addr()) {
			continue // sorted by address, then shortest first: p is inside the last kept one
		}
		out = append(out, p)
	}
	return out
}

// prefixItem is the interval [first address, last address + 1).
func prefixItem(p netip.Prefix) item {
	last := lastAddr(p)
	end := last.Next()
	if !end.IsValid() || end.Is4() != last.Is4() {
		end = netip.Addr{}
	}
	return item{start: p.Addr(), end: end}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr
}

// elements writes items the way the kernel takes them: an interval is a
// start element and an end element flagged IntervalEnd.
func elements(items map[item]bool) []nftables.SetElement {
	sorted := slices.SortedFunc(maps.Keys(items), func(a, b item) int { return a.start.Compare(b.start) })
	var els []nftables.SetElement
	for _, it := range sorted {
		els = append(els, nftables.SetElement{Key: it.start.AsSlice()})
		if it.end.IsValid() {
			els = append(els, nftables.SetElement{Key: it.end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// parseItems reads a set's elements back into items. In an interval set
// each start element is closed by the next end element in address order;
// an end element with the same address as a start closes the interval
// before it, which is how adjacent prefixes look. An end element that
// closes nothing is left out: it matches no packet.
func parseItems(els []nftables.SetElement, interval bool) (map[item]bool, error) {
	type bound struct {
		addr  netip.Addr
		isEnd bool
	}
	bounds := make([]bound, 0, len(els))
	for _, el := range els {
		addr, ok := netip.AddrFromSlice(el.Key)
		if !ok {
			return nil, fmt.Errorf("set element key %x is not an address", el.Key)
		}
		bounds = append(bounds, bound{addr: addr, isEnd: el.IntervalEnd})
	}
	items := map[item]bool{}
	if !interval {
		for _, b := range bounds {
			items[item{start: b.addr}] = true
		}
		return items, nil
	}
	slices.SortFunc(bounds, func(a, b bound) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		switch {
		case a.isEnd == b.isEnd:
			return 0
		case a.isEnd:
			return -1
		default:
			return 1
		}
	})
	var open netip.Addr // start of the interval being read, if any
	for _, b := range bounds {
		switch {
		case !b.isEnd && open.IsValid():
			return nil, fmt.Errorf("interval starting at %s has no end before %s", open, b.addr)
		case !b.isEnd:
			open = b.addr
		case open.IsValid():
			items[item{start: open, end: b.addr}] = true
			open = netip.Addr{}
		}
	}
	if open.IsValid() {
		items[item{start: open}] = true // runs to the family's last address
	}
	return items, nil
}

// setDiff is what one Apply writes to one set.
type setDiff struct {
	add, del map[item]bool
}

// diffMembers compares what the kernel holds with what is wanted, per set.
func diffMembers(have, want members) map[string]setDiff {
	out := map[string]setDiff{}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		d := setDiff{add: map[item]bool{}, del: map[item]bool{}}
		for it := range want[name] {
			if !have[name][it] {
				d.add[it] = true
			}
		}
		for it := range have[name] {
			if !want[name][it] {
				d.del[it] = true
			}
		}
		if len(d.add)+len(d.del) > 0 {
			out[name] = d
		}
	}
	return out
}
