package sdk

import (
	"net/netip"
	"slices"
)

// Diff is the Change that takes a hook from the peer set prev to next. Peers
// are matched by prefix (a host's identity in the bucket): a prefix only in
// next is Added, only in prev Removed (with its old values), in both with any
// field changed Updated. A changed public key at the same prefix is therefore
// an update, so a hook keyed by prefix never tears down and rebuilds its
// state for a re-keyed host. Prefixes are unique in a mesh; the inputs need
// not be sorted and are not modified. Every list of the result is sorted by
// prefix.
func Diff(prev, next []Peer) Change {
	old := make(map[netip.Prefix]Peer, len(prev))
	for _, p := range prev {
		old[p.Prefix] = p
	}
	c := Change{Peers: SortPeers(slices.Clone(next))}
	for _, p := range c.Peers {
		o, ok := old[p.Prefix]
		switch {
		case !ok:
			c.Added = append(c.Added, p)
		case o != p:
			c.Updated = append(c.Updated, p)
		}
		delete(old, p.Prefix)
	}
	for _, o := range old {
		c.Removed = append(c.Removed, o)
	}
	SortPeers(c.Removed)
	return c
}

// Empty reports whether the change adds, updates and removes nothing.
func (c Change) Empty() bool {
	return len(c.Added) == 0 && len(c.Updated) == 0 && len(c.Removed) == 0
}

// SortPeers sorts ps by prefix, in place, and returns it.
func SortPeers(ps []Peer) []Peer {
	slices.SortFunc(ps, func(a, b Peer) int { return a.Prefix.Compare(b.Prefix) })
	return ps
}
