package peer

import (
	"net/netip"
	"sort"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Table holds the bucket's peers.* and revoked.* entries as an agent last saw
// them and resolves which records are accepted. It is not safe for concurrent
// use; the agent's loop owns it.
type Table struct {
	rules      Rules
	selfKey    wgtypes.Key
	selfPrefix netip.Prefix

	entries map[string]entry
	revoked map[wgtypes.Key]bool
	dirty   bool
	view    View
}

type entry struct {
	acc Accepted
	rej *Rejection
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
	// Rejected lists every rejected record, in key order.
	Rejected []Rejection
}

// NewTable returns an empty table for a host with public key self that claims
// prefix selfPrefix.
func NewTable(rules Rules, self wgtypes.Key, selfPrefix netip.Prefix) *Table {
	t := &Table{rules: rules, selfKey: self, selfPrefix: selfPrefix}
	t.Reset()
	return t
}

// Reset forgets every entry, before a fresh snapshot is loaded.
func (t *Table) Reset() {
	t.entries = map[string]entry{}
	t.revoked = map[wgtypes.Key]bool{}
	t.dirty = true
}

// Put records the value of key at revision rev. Keys outside peers.* and
// revoked.* are ignored.
func (t *Table) Put(key string, value []byte, rev uint64) {
	switch {
	case len(key) > len(PeersPrefix) && key[:len(PeersPrefix)] == PeersPrefix:
		acc, rej := t.rules.Check(key, value, rev)
		t.entries[key] = entry{acc: acc, rej: rej}
		t.dirty = true
	case len(key) > len(RevokedPrefix) && key[:len(RevokedPrefix)] == RevokedPrefix:
		// The key alone revokes: a revocation whose value is damaged still
		// revokes, which is the safe side.
		if k, err := ParseRevokedKey(key); err == nil {
			t.revoked[k] = true
			t.dirty = true
		}
	}
}

// Delete forgets key.
func (t *Table) Delete(key string) {
	if _, ok := t.entries[key]; ok {
		delete(t.entries, key)
		t.dirty = true
		return
	}
	if k, err := ParseRevokedKey(key); err == nil && t.revoked[k] {
		delete(t.revoked, k)
		t.dirty = true
	}
}

// Len is the number of peers.* entries held, accepted or not.
func (t *Table) Len() int { return len(t.entries) }

// Resolve applies the set rules and returns the accepted peers. The result is
// cached until the next Put, Delete or Reset; callers must not modify it.
func (t *Table) Resolve() View {
	if !t.dirty {
		return t.view
	}
	selfKeyStr := Key(t.selfPrefix)
	v := View{Peers: make(map[wgtypes.Key]Accepted, len(t.entries)), SelfRevoked: t.revoked[t.selfKey]}
	cands := make([]Accepted, 0, len(t.entries))
	for key, e := range t.entries {
		if e.rej != nil {
			v.Rejected = append(v.Rejected, *e.rej)
			if key == selfKeyStr {
				rej := *e.rej
				v.SelfRejected = &rej
			}
			continue
		}
		if key == selfKeyStr {
			self := e.acc
			v.Self = &self
			continue
		}
		cands = append(cands, e.acc)
	}
	// The older revision keeps a public key (SPEC §3); ties cannot happen in
	// one bucket, but sort by key too so the outcome never depends on map order.
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].Revision != cands[j].Revision {
			return cands[i].Revision < cands[j].Revision
		}
		return cands[i].Key < cands[j].Key
	})
	holder := map[wgtypes.Key]string{}
	if v.Self != nil {
		holder[v.Self.PublicKey] = v.Self.Key
	}
	for _, c := range cands {
		switch {
		case c.PublicKey == t.selfKey:
			v.Rejected = append(v.Rejected, rejection(c, ReasonOwnKey, "public key is this host's own, which holds "+t.selfPrefix.String()))
		case t.revoked[c.PublicKey]:
			v.Rejected = append(v.Rejected, rejection(c, ReasonRevoked, "public key "+c.PublicKey.String()+" is revoked"))
		case holder[c.PublicKey] != "":
			v.Rejected = append(v.Rejected, rejection(c, ReasonDuplicateKey, "public key already used by "+holder[c.PublicKey]))
		default:
			holder[c.PublicKey] = c.Key
			v.Peers[c.PublicKey] = c
		}
	}
	sort.Slice(v.Rejected, func(i, j int) bool { return v.Rejected[i].Key < v.Rejected[j].Key })
	t.view, t.dirty = v, false
	return v
}

func rejection(a Accepted, r Reason, detail string) Rejection {
	return Rejection{Key: a.Key, Revision: a.Revision, Reason: r, Detail: detail}
}
