package peer

import (
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
