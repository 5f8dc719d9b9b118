package peer

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
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
	f := &tableFixture{t: t, self: wgtest.PublicKey(t), selfPrefix: netip.MustParsePrefix("fd10:1::/48")}
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

// TestTableViewIsStable checks that a View handed out earlier never changes
// under its holder, and that View may be called while the loop updates.
func TestTableViewIsStable(t *testing.T) {
	f := newFixture(t)
	f.put("fd10:1::/48", f.self)
	b := wgtest.PublicKey(t)
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
		f.put(fmt.Sprintf("fd10:%x::/48", 3+i%50), wgtest.PublicKey(t))
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
			self := wgtest.PublicKey(b)
			tb := NewTable(rules6, self, netip.MustParsePrefix("fd10:1::/48"))
			for i := range n {
				p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, byte(i >> 8), byte(i), 1}), 48)
				tb.Put(Key(p), Record{Name: "h", PublicKey: wgtest.PublicKey(b).String(), AdvertiseAddress: "198.18.0.9", AllowedIP: p.String(), WGPort: 51820}.Encode(), uint64(i+1))
			}
			tb.Update()
			p := netip.MustParsePrefix("fd10:ffff::/48")
			val := Record{Name: "new", PublicKey: wgtest.PublicKey(b).String(), AdvertiseAddress: "198.18.0.9", AllowedIP: p.String(), WGPort: 51820}.Encode()
			rev := uint64(n + 1)
			for b.Loop() {
				rev++
				tb.Put(Key(p), val, rev)
				if d := tb.Update(); len(d.Changes) != 1 {
					b.Fatalf("put: %d changes", len(d.Changes))
				}
				tb.Delete(Key(p), nil, rev)
				if d := tb.Update(); len(d.Changes) != 1 {
					b.Fatalf("delete: %d changes", len(d.Changes))
				}
			}
		})
	}
}

func TestTablePeerAndSelfKey(t *testing.T) {
	f := newFixture(t)
	b := wgtest.PublicKey(t)
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
		sk := wgtest.PrivateKey(t)
		pk := sk.PublicKey()
		self := wgtest.PrivateKey(t)
		mesh := netip.MustParsePrefix("fd10::/16")
		tb := NewTable(Rules{Mesh: mesh, Bits: 48}, self.PublicKey(), netip.MustParsePrefix("fd10:1::/48"))
		tb.Put(RevokedKey(pk), []byte("{}"), 1)
		tb.Update()
		tb.Reset()
		if unrevoked {
			tb.Delete(RevokedKey(pk), nil, 3)
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
