package peer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// referenceModel is the bucket as a plain map, resolved from scratch by the
// straightforward algorithm (sort every candidate by revision, then key).
// The incremental Table must always agree with it.
type referenceModel struct {
	rules      Rules
	self       wgtypes.Key
	selfPrefix netip.Prefix
	values     map[string][]byte
	revs       map[string]uint64
	revoked    map[wgtypes.Key]bool
	// markers are the keys whose last word is a delete marker.
	markers map[string]bool
}

func (m *referenceModel) resolve() View {
	selfKey := Key(m.selfPrefix)
	v := View{Peers: map[wgtypes.Key]Accepted{}, SelfRevoked: m.revoked[m.self]}
	var cands []Accepted
	for key, val := range m.values {
		acc, rej := m.rules.Check(key, val, m.revs[key])
		switch {
		case rej != nil:
			v.Rejected = append(v.Rejected, *rej)
			if key == selfKey {
				r := *rej
				v.SelfRejected = &r
			}
		case key == selfKey:
			a := acc
			v.Self = &a
			cands = append(cands, acc) // never a peer, but it holds its key
		default:
			cands = append(cands, acc)
		}
	}
	slices.SortFunc(cands, func(a, b Accepted) int {
		return cmpOr(cmpUint(a.Revision, b.Revision), strings.Compare(a.Key, b.Key))
	})
	holder := map[wgtypes.Key]string{}
	for _, c := range cands {
		switch {
		case c.Key == selfKey:
			if holder[c.PublicKey] == "" {
				holder[c.PublicKey] = c.Key
			}
		case c.PublicKey == m.self:
			v.Rejected = append(v.Rejected, rejection(c, ReasonOwnKey, "public key is this host's own, which holds "+m.selfPrefix.String()))
		case m.revoked[c.PublicKey]:
			v.Rejected = append(v.Rejected, rejection(c, ReasonRevoked, "public key "+c.PublicKey.String()+" is revoked"))
		case holder[c.PublicKey] != "":
			v.Rejected = append(v.Rejected, rejection(c, ReasonDuplicateKey, "public key already used by "+holder[c.PublicKey]))
		default:
			holder[c.PublicKey] = c.Key
			v.Peers[c.PublicKey] = c
		}
	}
	slices.SortFunc(v.Rejected, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	v.SelfDeleted = m.markers[selfKey] && v.Self == nil && v.SelfRejected == nil
	return v
}

// equateNetip compares addresses and prefixes by value.
var equateNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// tableDriver applies the same random operations to the reference model, a
// Table read with Resolve, and a Table read with Update whose changes are
// replayed onto a map.
type tableDriver struct {
	t        *testing.T
	rnd      *rand.Rand
	ref      *referenceModel
	resolved *Table
	updated  *Table
	replayed map[wgtypes.Key]Accepted
	prefixes []netip.Prefix
	keys     []wgtypes.Key
	rev      uint64
}

func newTableDriver(t *testing.T, seed uint64) *tableDriver {
	self := mustKey(t)
	selfPrefix := netip.MustParsePrefix("fd10:1::/48")
	d := &tableDriver{
		t: t, rnd: rand.New(rand.NewPCG(seed, 1)),
		ref:      &referenceModel{rules: rules6, self: self, selfPrefix: selfPrefix, values: map[string][]byte{}, revs: map[string]uint64{}, revoked: map[wgtypes.Key]bool{}, markers: map[string]bool{}},
		resolved: NewTable(rules6, self, selfPrefix),
		updated:  NewTable(rules6, self, selfPrefix),
		replayed: map[wgtypes.Key]Accepted{},
		prefixes: []netip.Prefix{selfPrefix},
		keys:     []wgtypes.Key{self},
	}
	for i := 2; i <= 7; i++ {
		d.prefixes = append(d.prefixes, netip.MustParsePrefix(fmt.Sprintf("fd10:%x::/48", i)))
	}
	for range 4 {
		d.keys = append(d.keys, mustKey(t))
	}
	return d
}

func (d *tableDriver) put(key string, val []byte) {
	d.rev++
	d.ref.values[key], d.ref.revs[key] = val, d.rev
	delete(d.ref.markers, key)
	d.resolved.Put(key, val, d.rev)
	d.updated.Put(key, val, d.rev)
}

func (d *tableDriver) del(key string) {
	delete(d.ref.values, key)
	d.ref.markers[key] = true
	d.resolved.Delete(key)
	d.updated.Delete(key)
}

// step makes one random change: mostly good records, some garbage, some
// records whose key does not encode their prefix, revocations and their
// removal, deletions, and now and then a reset followed by a snapshot.
func (d *tableDriver) step() {
	prefix := d.prefixes[d.rnd.IntN(len(d.prefixes))]
	pub := d.keys[d.rnd.IntN(len(d.keys))]
	switch op := d.rnd.IntN(20); {
	case op < 9:
		r := Record{Name: "h", PublicKey: pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: prefix.String(), WGPort: 51820 + d.rnd.IntN(2)}
		d.put(Key(prefix), r.Encode())
	case op < 10:
		d.put(Key(prefix), []byte("{not json"))
	case op < 11:
		other := d.prefixes[d.rnd.IntN(len(d.prefixes))]
		r := Record{Name: "liar", PublicKey: pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: other.String(), WGPort: 51820}
		d.put(Key(prefix), r.Encode())
	case op < 15:
		d.del(Key(prefix))
	case op < 17:
		d.ref.revoked[pub] = true
		d.rev++
		d.resolved.Put(RevokedKey(pub), nil, d.rev)
		d.updated.Put(RevokedKey(pub), nil, d.rev)
	case op < 19:
		delete(d.ref.revoked, pub)
		d.resolved.Delete(RevokedKey(pub))
		d.updated.Delete(RevokedKey(pub))
	default:
		d.snapshot()
	}
}

// snapshot resets both tables and loads the model again, as the agent does
// after a reconnect; half the time a record was deleted while it was away.
func (d *tableDriver) snapshot() {
	if d.rnd.IntN(2) == 0 {
		for key := range d.ref.values {
			delete(d.ref.values, key)
			d.ref.markers[key] = true
			break
		}
	}
	for _, tb := range []*Table{d.resolved, d.updated} {
		tb.Reset()
		for key, val := range d.ref.values {
			tb.Put(key, val, d.ref.revs[key])
		}
		// A watch's snapshot carries the markers too.
		for key := range d.ref.markers {
			if strings.HasPrefix(key, PeersPrefix) {
				tb.Delete(key)
			}
		}
		for k := range d.ref.revoked {
			tb.Put(RevokedKey(k), nil, 1)
		}
	}
}

// check compares both tables with the reference.
func (d *tableDriver) check(step int) {
	d.t.Helper()
	want := d.ref.resolve()
	if diff := cmp.Diff(want, d.resolved.Resolve(), equateNetip); diff != "" {
		d.t.Fatalf("step %d: Resolve (-reference +table):\n%s", step, diff)
	}
	delta := d.updated.Update()
	for i, c := range delta.Changes {
		if i > 0 && bytes.Compare(delta.Changes[i-1].PublicKey[:], c.PublicKey[:]) >= 0 {
			d.t.Fatalf("step %d: changes not in key order", step)
		}
		prev, had := d.replayed[c.PublicKey]
		if had != (c.Old != nil) || (had && prev != *c.Old) {
			d.t.Fatalf("step %d: change %v: Old = %v, but the last reported peer was %v (%v)", step, c.PublicKey, c.Old, prev, had)
		}
		if c.New == nil {
			delete(d.replayed, c.PublicKey)
		} else {
			d.replayed[c.PublicKey] = *c.New
		}
	}
	if diff := cmp.Diff(want.Peers, d.replayed, equateNetip); diff != "" {
		d.t.Fatalf("step %d: peers replayed from Update's changes (-reference +replayed):\n%s", step, diff)
	}
	got := View{Peers: d.replayed, Self: delta.Self, SelfRejected: delta.SelfRejected, SelfRevoked: delta.SelfRevoked, SelfDeleted: delta.SelfDeleted, Rejected: delta.Rejected}
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		d.t.Fatalf("step %d: Update (-reference +delta):\n%s", step, diff)
	}
	if delta.Peers != len(want.Peers) {
		d.t.Fatalf("step %d: Delta.Peers = %d, want %d", step, delta.Peers, len(want.Peers))
	}
}

// TestTableMatchesReference drives the incremental table with random
// operations and checks it against the from-scratch resolution after each
// one, both through Resolve and through Update's changes.
func TestTableMatchesReference(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			d := newTableDriver(t, seed)
			for i := range 400 {
				d.step()
				// Sometimes let several operations pile up before resolving,
				// as a burst of watch events does.
				if d.rnd.IntN(3) > 0 {
					d.check(i)
				}
			}
			d.check(400)
		})
	}
}
