package peer

import (
	"bytes"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Table holds the bucket's peers.* and revoked.* entries as an agent last saw
// them and resolves which records are accepted.
//
// Resolution is incremental: Put and Delete note which public keys they
// touched, and Update re-decides only those, so a watch event costs
// O(records sharing its public key), not O(bucket). The set rules only ever
// relate records with the same public key (the older revision keeps it; a
// revoked or own key rejects all of them), which is what makes that exact.
//
// A Table is not safe for concurrent use, except View, which may be called
// from any goroutine (the admin socket's status handler).
type Table struct {
	rules      Rules
	selfKey    wgtypes.Key
	selfPrefix netip.Prefix
	selfEntry  string // Key(selfPrefix)

	entries map[string]entry
	revoked map[wgtypes.Key]bool
	// groups indexes the candidates (records that pass the per-record rules,
	// other than the one at selfEntry) by public key, each group in
	// resolution order: oldest revision first, then bucket key.
	groups map[wgtypes.Key][]member
	// recordRej are the per-record rejections, by bucket key.
	recordRej map[string]Rejection

	dirty     map[wgtypes.Key]struct{} // groups to re-decide at the next Update
	selfDirty bool
	// selfMarker is set while a delete or purge marker is the last word at
	// this host's own key (as opposed to the key never having been written
	// in this bucket): only the first is a command.
	selfMarker bool
	rejDirty   bool // rejected must be rebuilt

	// setRej are the rejections by the set rules, by bucket key.
	setRej map[string]Rejection

	// The outcome of the last Update; mu guards it against View.
	mu          sync.Mutex
	peers       map[wgtypes.Key]Accepted
	self        *Accepted
	selfRej     *Rejection
	selfRevoked bool
	selfDeleted bool
	rejected    []Rejection // recordRej and setRej in key order; never modified once built
	view        *View       // built on demand, dropped by any change
}

type entry struct {
	acc Accepted
	rej *Rejection
}

type member struct {
	key string
	rev uint64
}

func (m member) compare(o member) int {
	if m.rev != o.rev {
		if m.rev < o.rev {
			return -1
		}
		return 1
	}
	return strings.Compare(m.key, o.key)
}

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
	// SelfDeleted is set when the last word at this host's prefix is a
	// delete or purge marker, rather than the key never having been
	// written (a re-created or restored bucket).
	SelfDeleted bool
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
	SelfDeleted  bool
	// Rejected is every rejected record in key order. It is shared between
	// calls until the rejections change: do not modify it.
	Rejected []Rejection
}

// NewTable returns an empty table for a host with public key self that claims
// prefix selfPrefix.
func NewTable(rules Rules, self wgtypes.Key, selfPrefix netip.Prefix) *Table {
	t := &Table{
		rules: rules, selfKey: self, selfPrefix: selfPrefix, selfEntry: Key(selfPrefix),
		peers: map[wgtypes.Key]Accepted{}, setRej: map[string]Rejection{},
		dirty: map[wgtypes.Key]struct{}{},
	}
	t.Reset()
	return t
}

// Reset forgets every entry, before a fresh snapshot is loaded. The outcome
// changes only at the next Update, which reports just the peers the snapshot
// really changed.
func (t *Table) Reset() {
	for pk := range t.groups {
		t.dirty[pk] = struct{}{}
	}
	for pk := range t.revoked {
		t.dirty[pk] = struct{}{}
	}
	t.entries = map[string]entry{}
	t.revoked = map[wgtypes.Key]bool{}
	t.groups = map[wgtypes.Key][]member{}
	t.recordRej = map[string]Rejection{}
	clear(t.setRej)
	t.selfDirty, t.rejDirty, t.selfMarker = true, true, false
}

// Put records the value of key at revision rev. Keys outside peers.* and
// revoked.* are ignored.
func (t *Table) Put(key string, value []byte, rev uint64) {
	switch {
	case len(key) > len(PeersPrefix) && key[:len(PeersPrefix)] == PeersPrefix:
		if key == t.selfEntry {
			t.selfMarker = false
		}
		acc, rej := t.rules.Check(key, value, rev)
		t.unindex(key)
		t.entries[key] = entry{acc: acc, rej: rej}
		t.index(key)
	case len(key) > len(RevokedPrefix) && key[:len(RevokedPrefix)] == RevokedPrefix:
		// The key alone revokes: a revocation whose value is damaged still
		// revokes, which is the safe side.
		if k, err := ParseRevokedKey(key); err == nil && !t.revoked[k] {
			t.revoked[k] = true
			t.touch(k)
		}
	}
}

// Delete forgets key: a delete or purge marker is its last word. A marker at
// this host's own key is remembered (Delta.SelfDeleted) even when the table
// never held a value there, as in a snapshot that starts with the marker.
func (t *Table) Delete(key string) {
	if key == t.selfEntry && !t.selfMarker {
		t.selfMarker, t.selfDirty = true, true
	}
	if _, ok := t.entries[key]; ok {
		t.unindex(key)
		delete(t.entries, key)
		return
	}
	if k, err := ParseRevokedKey(key); err == nil && t.revoked[k] {
		delete(t.revoked, k)
		t.touch(k)
	}
}

// touch marks the group of pk, and self when pk is this host's key.
func (t *Table) touch(pk wgtypes.Key) {
	t.dirty[pk] = struct{}{}
	if pk == t.selfKey {
		t.selfDirty = true
	}
}

// index adds the entry at key to the indexes.
func (t *Table) index(key string) {
	e := t.entries[key]
	switch {
	case e.rej != nil:
		t.recordRej[key] = *e.rej
		t.rejDirty = true
		t.selfDirty = t.selfDirty || key == t.selfEntry
	case key == t.selfEntry:
		t.selfDirty = true
	default:
		m := member{key: key, rev: e.acc.Revision}
		g := t.groups[e.acc.PublicKey]
		i, _ := slices.BinarySearchFunc(g, m, member.compare)
		t.groups[e.acc.PublicKey] = slices.Insert(g, i, m)
		t.dirty[e.acc.PublicKey] = struct{}{}
	}
}

// unindex removes the entry at key, if any, from the indexes.
func (t *Table) unindex(key string) {
	e, ok := t.entries[key]
	switch {
	case !ok:
	case e.rej != nil:
		delete(t.recordRej, key)
		t.rejDirty = true
		t.selfDirty = t.selfDirty || key == t.selfEntry
	case key == t.selfEntry:
		t.selfDirty = true
	default:
		// A set-rule rejection is re-made, if it still holds, when the key
		// is indexed again.
		if _, ok := t.setRej[key]; ok {
			delete(t.setRej, key)
			t.rejDirty = true
		}
		pk := e.acc.PublicKey
		g := t.groups[pk]
		if i, found := slices.BinarySearchFunc(g, member{key: key, rev: e.acc.Revision}, member.compare); found {
			g = slices.Delete(g, i, i+1)
		}
		if len(g) == 0 {
			delete(t.groups, pk)
		} else {
			t.groups[pk] = g
		}
		t.dirty[pk] = struct{}{}
	}
}

// Rejected reports whether the entry at key is a value the per-record rules
// reject (garbage where a record was).
func (t *Table) Rejected(key string) bool {
	e, ok := t.entries[key]
	return ok && e.rej != nil
}

// AcceptedAt is the accepted peer whose record is the one at key, as of the
// last Update.
func (t *Table) AcceptedAt(key string) (Accepted, bool) {
	e, ok := t.entries[key]
	if !ok || e.rej != nil {
		return Accepted{}, false
	}
	p, ok := t.peers[e.acc.PublicKey]
	return p, ok && p.Key == key
}

// Len is the number of peers.* entries held, accepted or not.
func (t *Table) Len() int { return len(t.entries) }

// SelfKey is this host's public key, as given to NewTable.
func (t *Table) SelfKey() wgtypes.Key { return t.selfKey }

// Peer is the accepted peer with public key k as of the last Update.
func (t *Table) Peer(k wgtypes.Key) (Accepted, bool) {
	p, ok := t.peers[k]
	return p, ok
}

// Update re-decides what changed since the last Update and reports it.
func (t *Table) Update() Delta {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.selfDirty {
		t.updateSelf()
	}
	var changes []Change
	for pk := range t.dirty {
		old, had := t.peers[pk]
		now, has := t.decide(pk)
		switch {
		case has && (!had || now != old):
			t.peers[pk] = now
		case had && !has:
			delete(t.peers, pk)
		default:
			continue
		}
		c := Change{PublicKey: pk}
		if had {
			c.Old = &old
		}
		if has {
			c.New = &now
		}
		changes = append(changes, c)
	}
	if len(t.dirty) > 64 {
		// A cleared map keeps its size, and ranging over it would cost as
		// much as the snapshot that grew it, on every later Update.
		t.dirty = map[wgtypes.Key]struct{}{}
	} else {
		clear(t.dirty)
	}
	slices.SortFunc(changes, func(a, b Change) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	if len(changes) > 0 {
		t.view = nil
	}
	if t.rejDirty {
		t.rebuildRejected()
	}
	return Delta{
		Changes: changes, Peers: len(t.peers),
		Self: t.self, SelfRejected: t.selfRej, SelfRevoked: t.selfRevoked, SelfDeleted: t.selfDeleted, Rejected: t.rejected,
	}
}

// updateSelf re-reads the entry at this host's prefix. Whoever holds it keeps
// its public key against every other record, so a change of holder re-decides
// the old and the new holder's groups.
func (t *Table) updateSelf() {
	var self *Accepted
	var selfRej *Rejection
	if e, ok := t.entries[t.selfEntry]; ok {
		if e.rej != nil {
			r := *e.rej
			selfRej = &r
		} else {
			a := e.acc
			self = &a
		}
	}
	if t.self != nil {
		t.dirty[t.self.PublicKey] = struct{}{}
	}
	if self != nil {
		t.dirty[self.PublicKey] = struct{}{}
	}
	t.self, t.selfRej, t.selfRevoked, t.selfDeleted = self, selfRej, t.revoked[t.selfKey], t.selfMarker && self == nil && selfRej == nil
	t.selfDirty = false
	t.view = nil
}

// decide applies the set rules to the group of pk, in resolution order, and
// returns the accepted peer, if any. It records the rejections it makes and
// withdraws the ones that no longer hold.
func (t *Table) decide(pk wgtypes.Key) (Accepted, bool) {
	var winner *Accepted
	for _, m := range t.groups[pk] {
		c := t.entries[m.key].acc
		var rej Rejection
		switch {
		case pk == t.selfKey:
			rej = rejection(c, ReasonOwnKey, "public key is this host's own, which holds "+t.selfPrefix.String())
		case t.revoked[pk]:
			rej = rejection(c, ReasonRevoked, "public key "+pk.String()+" is revoked")
		case t.self != nil && t.self.PublicKey == pk:
			rej = rejection(c, ReasonDuplicateKey, "public key already used by "+t.self.Key)
		case winner != nil:
			rej = rejection(c, ReasonDuplicateKey, "public key already used by "+winner.Key)
		default:
			winner = &c
			if _, ok := t.setRej[m.key]; ok {
				delete(t.setRej, m.key)
				t.rejDirty = true
			}
			continue
		}
		if old, ok := t.setRej[m.key]; !ok || old != rej {
			t.setRej[m.key] = rej
			t.rejDirty = true
		}
	}
	if winner == nil {
		return Accepted{}, false
	}
	return *winner, true
}

func (t *Table) rebuildRejected() {
	rej := make([]Rejection, 0, len(t.recordRej)+len(t.setRej))
	rej = slices.AppendSeq(rej, maps.Values(t.recordRej))
	rej = slices.AppendSeq(rej, maps.Values(t.setRej))
	if len(rej) == 0 {
		rej = nil
	}
	slices.SortFunc(rej, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	if !slices.Equal(rej, t.rejected) {
		t.rejected = rej
		t.view = nil
	}
	t.rejDirty = false
}

// View is the outcome of the last Update. It is built on the first call
// after a change (O(peers)) and shared until the next one; callers must not
// modify it.
func (t *Table) View() View {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.view == nil {
		v := View{Peers: maps.Clone(t.peers), SelfRevoked: t.selfRevoked, SelfDeleted: t.selfDeleted, Rejected: t.rejected}
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

func rejection(a Accepted, r Reason, detail string) Rejection {
	return Rejection{Key: a.Key, Revision: a.Revision, Reason: r, Detail: detail}
}
