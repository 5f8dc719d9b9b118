package peer

import (
	"maps"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// View is the outcome of resolving a Table.
type View struct {
	// Peers are the accepted records of other hosts, by public key.
	Peers map[wgtypes.Key]Accepted
	// Self is the record at this host's prefix, nil when there is none. It may
	// hold another public key (the prefix was taken over).
	Self *Accepted
	// SelfRejected is set when the entry at this host's prefix exists but is
	// not an acceptable record (someone overwrote it with garbage).
	SelfRejected *Rejection
	// SelfRevoked is set when this host's public key is revoked.
	SelfRevoked bool
	// SelfEvicted says why, when a command removed this host's record.
	SelfEvicted string
	// Rejected lists every rejected record, in key order.
	Rejected []Rejection
}

// Change is one public key whose accepted peer appeared, changed (any new
// revision) or went away.
type Change struct {
	PublicKey wgtypes.Key
	Old, New  *Accepted // nil: no accepted peer before / after
}

// Delta is what Update reports: a View's self fields and rejections, and
// instead of every peer, the peers that changed since the previous Update.
type Delta struct {
	Changes      []Change // in public key order
	Peers        int      // accepted peers now
	Self         *Accepted
	SelfRejected *Rejection
	SelfRevoked  bool
	SelfEvicted  string
	// Rejected is every rejected record in key order. It is shared between
	// calls until the rejections change: do not modify it.
	Rejected []Rejection
}

// At is the value at key as the per-record rules judged it: valid with the
// record when it passes them, present when the table holds any value there.
// The set rules may still reject a valid one.
func (t *Table) At(key string) (rec Accepted, valid, present bool) {
	s, ok := t.present[key]
	if !ok || s.marker {
		return Accepted{}, false, false
	}
	return s.acc, s.rej == nil, true
}

// Missing are the signed records the table holds that the bucket does not
// (no value and no marker at their keys): lost state that any agent may
// write back, since a signed record speaks for itself.
func (t *Table) Missing() []Accepted {
	var out []Accepted
	for _, k := range t.signed {
		if _, ok := t.present[k.Key]; !ok && !t.isRevoked(k.PublicKey) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b Accepted) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// RevokedKeys are the revoked public keys this table knows, kept across
// Reset (see there).
func (t *Table) RevokedKeys() []wgtypes.Key {
	return slices.Collect(maps.Keys(t.revoked))
}

// IsRevoked reports whether pk has a revoked.* record.
func (t *Table) IsRevoked(pk wgtypes.Key) bool { return t.isRevoked(pk) }

// Revocation is the value of pk's revocation, as the table last saw it.
func (t *Table) Revocation(pk wgtypes.Key) []byte { return t.revoked[pk] }

// Len is the number of peers.* values the bucket holds, accepted or not.
func (t *Table) Len() int {
	n := 0
	for key, s := range t.present {
		if !s.marker && strings.HasPrefix(key, PeersPrefix) {
			n++
		}
	}
	return n
}

// SelfKey is this host's public key, as given to NewTable.
func (t *Table) SelfKey() wgtypes.Key { return t.selfKey }

// Peer is the accepted peer with public key k as of the last Update.
func (t *Table) Peer(k wgtypes.Key) (Accepted, bool) {
	p, ok := t.peers[k]
	return p, ok
}

// View is the outcome of the last Update. It is built on the first call
// after a change (O(peers)) and shared until the next one; callers must not
// modify it.
func (t *Table) View() View {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.view == nil {
		v := View{Peers: maps.Clone(t.peers), SelfRevoked: t.selfRevoked, SelfEvicted: t.selfEvicted, Rejected: t.rejected}
		if t.self != nil {
			s := *t.self
			v.Self = &s
		}
		if t.selfRej != nil {
			r := *t.selfRej
			v.SelfRejected = &r
		}
		t.view = &v
	}
	return *t.view
}

// Resolve is Update followed by View, for callers that want the whole
// outcome rather than the changes. The result is cached until the next Put,
// Delete or Reset; callers must not modify it.
func (t *Table) Resolve() View {
	t.Update()
	return t.View()
}
