package peer

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// tableFixture is a host "self" and helpers to write records into a table.
type tableFixture struct {
	t          *testing.T
	table      *Table
	self       wgtypes.Key
	selfPrefix netip.Prefix
	rev        uint64
}

func newFixture(t *testing.T) *tableFixture {
	f := &tableFixture{t: t, self: mustKey(t), selfPrefix: netip.MustParsePrefix("fd10:1::/48")}
	f.table = NewTable(rules6, f.self, f.selfPrefix)
	return f
}

// put writes a record for pub at prefix and returns its bucket key.
func (f *tableFixture) put(prefix string, pub wgtypes.Key) string {
	f.rev++
	r := Record{Name: prefix, PublicKey: pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: prefix, WGPort: 51820}
	key := Key(netip.MustParsePrefix(prefix))
	f.table.Put(key, r.Encode(), f.rev)
	return key
}

func (f *tableFixture) peers() map[string]string {
	out := map[string]string{}
	for k, a := range f.table.Resolve().Peers {
		out[a.AllowedIP] = k.String()
	}
	return out
}

func (f *tableFixture) reasons() map[string]Reason {
	out := map[string]Reason{}
	for _, r := range f.table.Resolve().Rejected {
		out[r.Key] = r.Reason
	}
	return out
}

func TestTableSelfIsNotAPeer(t *testing.T) {
	f := newFixture(t)
	f.put("fd10:1::/48", f.self)
	b := mustKey(t)
	f.put("fd10:2::/48", b)
	v := f.table.Resolve()
	if v.Self == nil || v.Self.PublicKey != f.self {
		t.Fatalf("Self = %+v, want own record", v.Self)
	}
	if diff := cmp.Diff(map[string]string{"fd10:2::/48": b.String()}, f.peers()); diff != "" {
		t.Fatalf("peers (-want +got):\n%s", diff)
	}
}

func TestTableDuplicateKeyOlderWins(t *testing.T) {
	f := newFixture(t)
	dup := mustKey(t)
	f.put("fd10:2::/48", dup)
	second := f.put("fd10:3::/48", dup)
	if diff := cmp.Diff(map[string]string{"fd10:2::/48": dup.String()}, f.peers()); diff != "" {
		t.Fatalf("peers (-want +got):\n%s", diff)
	}
	if got := f.reasons()[second]; got != ReasonDuplicateKey {
		t.Fatalf("newer record reason = %q, want %q", got, ReasonDuplicateKey)
	}
	// When the older record goes, the newer one takes over: level-triggered.
	f.table.Delete(Key(netip.MustParsePrefix("fd10:2::/48")))
	if diff := cmp.Diff(map[string]string{"fd10:3::/48": dup.String()}, f.peers()); diff != "" {
		t.Fatalf("after delete, peers (-want +got):\n%s", diff)
	}
}

func TestTableOwnKeyElsewhere(t *testing.T) {
	f := newFixture(t)
	f.put("fd10:1::/48", f.self)
	thief := f.put("fd10:9::/48", f.self)
	if len(f.peers()) != 0 {
		t.Fatalf("peers = %v, want none", f.peers())
	}
	if got := f.reasons()[thief]; got != ReasonOwnKey {
		t.Fatalf("reason = %q, want %q", got, ReasonOwnKey)
	}
}

func TestTableRevocation(t *testing.T) {
	f := newFixture(t)
	b := mustKey(t)
	key := f.put("fd10:2::/48", b)
	f.table.Put(RevokedKey(b), []byte("garbage still revokes"), 99)
	if len(f.peers()) != 0 || f.reasons()[key] != ReasonRevoked {
		t.Fatalf("peers %v reasons %v: want the revoked key rejected", f.peers(), f.reasons())
	}
	f.table.Delete(RevokedKey(b))
	if len(f.peers()) != 1 {
		t.Fatalf("unrevoke: peers = %v, want one", f.peers())
	}
	f.table.Put(RevokedKey(f.self), nil, 100)
	if !f.table.Resolve().SelfRevoked {
		t.Fatal("own key revoked but SelfRevoked unset")
	}
}

func TestTableSelfStates(t *testing.T) {
	f := newFixture(t)
	if v := f.table.Resolve(); v.Self != nil {
		t.Fatalf("empty table: Self = %+v", v.Self)
	}
	selfKey := Key(f.selfPrefix)
	f.table.Put(selfKey, []byte("{not json"), 1)
	if v := f.table.Resolve(); v.Self != nil || v.SelfRejected == nil {
		t.Fatalf("garbage at own key: Self=%v SelfRejected=%v", v.Self, v.SelfRejected)
	}
	other := mustKey(t)
	f.put("fd10:1::/48", other)
	if v := f.table.Resolve(); v.Self == nil || v.Self.PublicKey != other {
		t.Fatalf("takeover: Self = %+v, want the other key", v.Self)
	}
}

func TestTableIgnoresOtherKeysAndResets(t *testing.T) {
	f := newFixture(t)
	f.table.Put("heartbeat.x", []byte("1"), 1)
	f.table.Put("revoked.notakey", []byte("1"), 2)
	f.put("fd10:2::/48", mustKey(t))
	if f.table.Len() != 1 || len(f.peers()) != 1 {
		t.Fatalf("Len=%d peers=%v, want 1 and 1", f.table.Len(), f.peers())
	}
	f.table.Reset()
	if f.table.Len() != 0 || len(f.peers()) != 0 {
		t.Fatal("Reset kept entries")
	}
}

func TestRejectionOrderIsStable(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"fd10:5::/48", "fd10:3::/48", "fd10:4::/48"} {
		f.table.Put(Key(netip.MustParsePrefix(p)), []byte("x"), 1)
	}
	a := f.table.Resolve().Rejected
	f.table.Put("peers.zzz", []byte("x"), 2)
	f.table.Delete("peers.zzz")
	b := f.table.Resolve().Rejected
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("rejections not stable (-first +second):\n%s", diff)
	}
}

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
		default:
			cands = append(cands, acc)
		}
	}
	slices.SortFunc(cands, func(a, b Accepted) int {
		return cmpOr(cmpUint(a.Revision, b.Revision), strings.Compare(a.Key, b.Key))
	})
	holder := map[wgtypes.Key]string{}
	if v.Self != nil {
		holder[v.Self.PublicKey] = v.Self.Key
	}
	for _, c := range cands {
		switch {
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

func TestTableUpdateReportsOnlyRealChanges(t *testing.T) {
	f := newFixture(t)
	b, c := mustKey(t), mustKey(t)
	f.put("fd10:1::/48", f.self)
	f.put("fd10:2::/48", b)
	f.put("fd10:3::/48", c)
	if d := f.table.Update(); len(d.Changes) != 2 || d.Peers != 2 {
		t.Fatalf("first Update: %d changes, %d peers; want 2 and 2", len(d.Changes), d.Peers)
	}
	tests := []struct {
		name  string
		apply func()
		want  map[wgtypes.Key]string // public key → "add", "update" or "remove"
	}{
		{"nothing", func() {}, map[wgtypes.Key]string{}},
		{"snapshot with the same revisions", func() {
			snap := map[string]entry{}
			maps.Copy(snap, f.table.entries)
			f.table.Reset()
			for k, e := range snap {
				f.table.Put(k, Record{Name: e.acc.Name, PublicKey: e.acc.PublicKey.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: e.acc.AllowedIP, WGPort: 51820}.Encode(), e.acc.Revision)
			}
		}, map[wgtypes.Key]string{}},
		{"new revision of one", func() { f.put("fd10:2::/48", b) }, map[wgtypes.Key]string{b: "update"}},
		{"revoke one", func() { f.table.Put(RevokedKey(c), nil, 50) }, map[wgtypes.Key]string{c: "remove"}},
		{"unrevoke it", func() { f.table.Delete(RevokedKey(c)) }, map[wgtypes.Key]string{c: "add"}},
		{"duplicate of an older key changes nothing", func() { f.put("fd10:4::/48", b) }, map[wgtypes.Key]string{}},
		{"older record goes, newer takes over", func() { f.table.Delete(Key(netip.MustParsePrefix("fd10:2::/48"))) }, map[wgtypes.Key]string{b: "update"}},
		{"own prefix taken by c's key", func() { f.put("fd10:1::/48", c) }, map[wgtypes.Key]string{c: "remove"}},
		{"own prefix back", func() { f.put("fd10:1::/48", f.self) }, map[wgtypes.Key]string{c: "add"}},
		{"delete everything", func() { f.table.Reset() }, map[wgtypes.Key]string{b: "remove", c: "remove"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.apply()
			got := map[wgtypes.Key]string{}
			for _, ch := range f.table.Update().Changes {
				switch {
				case ch.Old == nil:
					got[ch.PublicKey] = "add"
				case ch.New == nil:
					got[ch.PublicKey] = "remove"
				default:
					got[ch.PublicKey] = "update"
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("changes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTableViewIsStable checks that a View handed out earlier never changes
// under its holder, and that View may be called while the loop updates.
func TestTableViewIsStable(t *testing.T) {
	f := newFixture(t)
	f.put("fd10:1::/48", f.self)
	b := mustKey(t)
	f.put("fd10:2::/48", b)
	before := f.table.Resolve()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = len(f.table.View().Peers)
			}
		}
	}()
	for i := range 200 {
		f.put(fmt.Sprintf("fd10:%x::/48", 3+i%50), mustKey(t))
		f.table.Update()
	}
	close(stop)
	<-done
	if len(before.Peers) != 1 || before.Peers[b].AllowedIP != "fd10:2::/48" {
		t.Fatalf("an earlier View changed: %v", before.Peers)
	}
}

// BenchmarkTableOneChange is the per-event cost at fleet sizes: one new
// record in a table of n, then its deletion.
func BenchmarkTableOneChange(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			self := mustKey(b)
			tb := NewTable(rules6, self, netip.MustParsePrefix("fd10:1::/48"))
			for i := range n {
				p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, byte(i >> 8), byte(i), 1}), 48)
				tb.Put(Key(p), Record{Name: "h", PublicKey: mustKey(b).String(), AdvertiseAddress: "198.18.0.9", AllowedIP: p.String(), WGPort: 51820}.Encode(), uint64(i+1))
			}
			tb.Update()
			p := netip.MustParsePrefix("fd10:ffff::/48")
			val := Record{Name: "new", PublicKey: mustKey(b).String(), AdvertiseAddress: "198.18.0.9", AllowedIP: p.String(), WGPort: 51820}.Encode()
			rev := uint64(n + 1)
			for b.Loop() {
				rev++
				tb.Put(Key(p), val, rev)
				if d := tb.Update(); len(d.Changes) != 1 {
					b.Fatalf("put: %d changes", len(d.Changes))
				}
				tb.Delete(Key(p))
				if d := tb.Update(); len(d.Changes) != 1 {
					b.Fatalf("delete: %d changes", len(d.Changes))
				}
			}
		})
	}
}

func TestTablePeerAndSelfKey(t *testing.T) {
	f := newFixture(t)
	b := mustKey(t)
	f.put("fd10:2::/48", b)
	if _, ok := f.table.Peer(b); ok {
		t.Fatal("Peer reports a record before Update decided it")
	}
	f.table.Update()
	if p, ok := f.table.Peer(b); !ok || p.AllowedIP != "fd10:2::/48" {
		t.Fatalf("Peer(b) = %+v, %v; want the record at fd10:2::/48", p, ok)
	}
	if f.table.SelfKey() != f.self {
		t.Fatal("SelfKey is not the key given to NewTable")
	}
}
