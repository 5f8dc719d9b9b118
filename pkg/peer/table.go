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
	// selfForeign is set while the last value this table saw at this host's
	// own key was not its valid record (another key's record, garbage). It
	// outlives a marker and a Reset: a marker that follows a foreign value
	// releases that value and is no command to this host, even when both
	// arrive in one batch.
	selfForeign bool
	rejDirty    bool // rejected must be rebuilt

	// setRej are the rejections by the set rules, by bucket key.
	setRej map[string]Rejection

	// The outcome of the last Update; mu guards it against View.
	mu          sync.Mutex
	peers       map[wgtypes.Key]Accepted
	self        *Accepted
	selfRej     *Rejection
	selfRevoked bool
	selfDeleted bool
	// selfDeletedForeign: the marker at selfEntry followed a foreign value.
	selfDeletedForeign bool
	rejected           []Rejection // recordRej and setRej in key order; never modified once built
	view               *View       // built on demand, dropped by any change
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
//
// Revocations are kept: a revocation is a command, and only another command
// — a delete marker at its revoked.* key, which a snapshot carries — lifts
// it. Its absence from a snapshot (a bucket deleted and made again, one
// restored from an older backup) is lost state, and must not let an evicted
// key back in.
func (t *Table) Reset() {
	for pk := range t.groups {
		t.dirty[pk] = struct{}{}
	}
	for pk := range t.revoked {
		t.dirty[pk] = struct{}{}
	}
	t.entries = map[string]entry{}
	if t.revoked == nil {
		t.revoked = map[wgtypes.Key]bool{}
	}
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
		if key == t.selfEntry {
			t.selfForeign = rej != nil || acc.PublicKey != t.selfKey
		}
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
		t.selfDeletedForeign = t.selfForeign
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

// Release is Delete for a marker that the owner of a copied key wrote to
// release its copy: at this host's own key it follows a foreign value (the
// copy, which a re-read may never have shown), so it is no eviction.
func (t *Table) Release(key string) {
	if key == t.selfEntry {
		t.selfForeign = true
	}
	t.Delete(key)
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
		Self: t.self, SelfRejected: t.selfRej, SelfRevoked: t.selfRevoked, SelfDeleted: t.selfDeleted,
		SelfDeletedForeign: t.selfDeleted && t.selfDeletedForeign, Rejected: t.rejected,
	}
}

// updateSelf re-reads the entry at this host's prefix. Whoever holds it keeps
// its public key against every younger record (the older record keeps a
// key, wherever it is), so a change of holder re-decides the old and the new
// holder's groups.
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
		case winner != nil:
			rej = rejection(c, ReasonDuplicateKey, "public key already used by "+winner.Key)
		case t.self != nil && t.self.PublicKey == pk && t.self.Revision < c.Revision:
			// The record at this host's prefix is never a peer, but it is
			// a record of its key like any other: the older keeps it.
			rej = rejection(c, ReasonDuplicateKey, "public key already used by "+t.self.Key)
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

func rejection(a Accepted, r Reason, detail string) Rejection {
	return Rejection{Key: a.Key, Revision: a.Revision, Reason: r, Detail: detail}
}
