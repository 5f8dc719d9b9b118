package peer

import (
	"fmt"
	"maps"
	"net/netip"
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

// TestTableKnowsWhatAMarkerFollowed: a delete marker at this host's key
// is reported as following a foreign value when the last value the table saw
// there was not this host's record, even when the write and the marker come
// in one batch (one Update), and across a Reset (a fresh snapshot that starts
// with the marker).
func TestTableKnowsWhatAMarkerFollowed(t *testing.T) {
	selfKey := Key(netip.MustParsePrefix("fd10:1::/48"))
	for _, tc := range []struct {
		name        string
		write       func(f *tableFixture)
		reset       bool
		release     bool // the marker is a release (Table.Release)
		wantForeign bool
	}{
		{"after ours", func(f *tableFixture) { f.put("fd10:1::/48", f.self) }, false, false, false},
		{"after another key's record", func(f *tableFixture) { f.put("fd10:1::/48", mustKey(t)) }, false, false, true},
		{"after garbage", func(f *tableFixture) { f.rev++; f.table.Put(selfKey, []byte("{"), f.rev) }, false, false, true},
		{"after another key's record, then a snapshot", func(f *tableFixture) { f.put("fd10:1::/48", mustKey(t)) }, true, false, true},
		{"after ours, then a snapshot", func(f *tableFixture) { f.put("fd10:1::/48", f.self) }, true, false, false},
		// A re-read shows the release of a copy the watch never handed over.
		{"a release after ours, then a snapshot", func(f *tableFixture) { f.put("fd10:1::/48", f.self) }, true, true, true},
		{"a release after ours", func(f *tableFixture) { f.put("fd10:1::/48", f.self) }, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.put("fd10:1::/48", f.self)
			if d := f.table.Update(); d.Self == nil || d.SelfDeleted {
				t.Fatalf("own record: Self=%v SelfDeleted=%v", d.Self, d.SelfDeleted)
			}
			tc.write(f)
			if tc.reset {
				f.table.Update()
				f.table.Reset()
			}
			if tc.release {
				f.table.Release(selfKey)
			} else {
				f.table.Delete(selfKey)
			}
			d := f.table.Update()
			if !d.SelfDeleted || d.SelfDeletedForeign != tc.wantForeign {
				t.Errorf("SelfDeleted=%v SelfDeletedForeign=%v, want true and %v", d.SelfDeleted, d.SelfDeletedForeign, tc.wantForeign)
			}
			f.put("fd10:1::/48", f.self)
			if d := f.table.Update(); d.SelfDeleted || d.SelfDeletedForeign {
				t.Errorf("own record back: SelfDeleted=%v SelfDeletedForeign=%v", d.SelfDeleted, d.SelfDeletedForeign)
			}
		})
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
		// A younger record of c's key at this host's prefix: c's older
		// record keeps the key, as it would anywhere else.
		{"own prefix taken by a copy of c's key", func() { f.put("fd10:1::/48", c) }, map[wgtypes.Key]string{}},
		{"own prefix back", func() { f.put("fd10:1::/48", f.self) }, map[wgtypes.Key]string{}},
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

// A revocation outlives a snapshot that lacks it (a bucket made again):
// absence is not a command. A marker at its key in a snapshot (an unrevoke
// while the agent was away) lifts it.
func TestRevocationOutlivesAReset(t *testing.T) {
	for _, unrevoked := range []bool{false, true} {
		sk, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		pk := sk.PublicKey()
		self, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		mesh := netip.MustParsePrefix("fd10::/16")
		tb := NewTable(Rules{Mesh: mesh, Bits: 48}, self.PublicKey(), netip.MustParsePrefix("fd10:1::/48"))
		tb.Put(RevokedKey(pk), []byte("{}"), 1)
		tb.Update()
		tb.Reset()
		if unrevoked {
			tb.Delete(RevokedKey(pk))
		}
		r := Record{Name: "back", PublicKey: pk.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: "fd10:2::/48", WGPort: 51820}
		tb.Put(Key(netip.MustParsePrefix("fd10:2::/48")), r.Encode(), 2)
		_, accepted := tb.Resolve().Peers[pk]
		if accepted != unrevoked {
			t.Errorf("unrevoked %v: record of the revoked key accepted %v", unrevoked, accepted)
		}
		if got := len(tb.RevokedKeys()); got != map[bool]int{false: 1, true: 0}[unrevoked] {
			t.Errorf("unrevoked %v: %d revoked keys kept", unrevoked, got)
		}
	}
}
