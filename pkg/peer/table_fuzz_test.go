package peer

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The small worlds FuzzTable builds bucket histories from: a few prefixes
// (the table's own first) and a few public keys (the table's own first), so
// collisions — the interesting cases — are frequent.
var (
	fuzzPrefixes = []string{
		"fd10:1::/48", "fd10:2::/48", "fd10:3::/48", "fd10:4::/48",
		"fd10::/32", "::/0", "fd11::/48", "fd10:5::1/48",
	}
	fuzzKeys = []wgtypes.Key{testKey(1), testKey(2), testKey(3), {}}
)

// fuzzState is the bucket as the operations left it, to rebuild a table from.
type fuzzState struct {
	values  map[string][]byte
	revs    map[string]uint64
	revoked map[wgtypes.Key]bool
}

// FuzzTable drives a Table through arbitrary bucket histories (puts of good
// and hostile records, deletes, revocations) and checks after each step that
// the view obeys docs/contract.md §4's set rules, and at the end that it equals the view
// of a table loaded with only the final bucket: what an agent applies may
// depend on what the bucket holds, never on the order it heard about it.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0x00, 0x05, 0x0a})       // three hosts
	f.Add([]byte{0x05, 0x09, 0x06, 0xc5}) // duplicate key, then revoked
	f.Add([]byte{0x00, 0x08, 0x80})       // own key elsewhere, self deleted
	f.Add([]byte{0x05, 0x11, 0x16, 0x1b}) // wide, default and out-of-mesh prefixes
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64] // histories longer than this find nothing new
		}
		self := fuzzKeys[0]
		selfPrefix := netip.MustParsePrefix(fuzzPrefixes[0])
		table := NewTable(rules6, self, selfPrefix)
		st := fuzzState{values: map[string][]byte{}, revs: map[string]uint64{}, revoked: map[wgtypes.Key]bool{}}
		for i, op := range ops {
			st.apply(table, op, uint64(i+1))
			checkView(t, table, st, self, selfPrefix)
		}
		fresh := NewTable(rules6, self, selfPrefix)
		for _, k := range slices.Sorted(maps.Keys(st.values)) {
			fresh.Put(k, st.values[k], st.revs[k])
		}
		for k := range st.revoked {
			fresh.Put(RevokedKey(k), []byte(`{}`), 1)
		}
		netipTypes := cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})
		if diff := cmp.Diff(outcome(fresh.Resolve()), outcome(table.Resolve()), netipTypes); diff != "" {
			t.Fatalf("view after history %x differs from a fresh load of the same bucket (-fresh +history):\n%s", ops, diff)
		}
	})
}

// viewOutcome is what a View decides, without whatever else it may carry
// (caches, indexes) for the table's own use.
type viewOutcome struct {
	Peers        map[wgtypes.Key]Accepted
	Self         *Accepted
	SelfRejected *Rejection
	SelfRevoked  bool
	Rejected     []Rejection
}

func outcome(v View) viewOutcome {
	return viewOutcome{v.Peers, v.Self, v.SelfRejected, v.SelfRevoked, v.Rejected}
}

// apply performs one operation encoded in op: bits 7-5 pick what, bits 4-2
// a prefix and bits 1-0 a public key.
func (s *fuzzState) apply(t *Table, op byte, rev uint64) {
	prefix := fuzzPrefixes[(op>>2)&7]
	pub := fuzzKeys[op&3]
	key := PeersPrefix + encode(prefix)
	switch op >> 5 {
	case 0, 1, 2, 3: // put a record (good or not, as the prefix and key make it)
		r := Record{Name: "n", PublicKey: pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: prefix, WGPort: 51820}
		s.put(t, key, r.Encode(), rev)
	case 4: // delete
		t.Delete(key)
		delete(s.values, key)
		delete(s.revs, key)
	case 5: // garbage at the key
		s.put(t, key, []byte("{not json"), rev)
	case 6: // revoke
		t.Put(RevokedKey(pub), []byte(`{}`), rev)
		s.revoked[pub] = true
	case 7: // unrevoke
		t.Delete(RevokedKey(pub))
		delete(s.revoked, pub)
	}
}

func (s *fuzzState) put(t *Table, key string, v []byte, rev uint64) {
	t.Put(key, v, rev)
	s.values[key], s.revs[key] = v, rev
}

// checkView asserts the set rules on the table's view of st.
func checkView(t *testing.T, table *Table, st fuzzState, self wgtypes.Key, selfPrefix netip.Prefix) {
	t.Helper()
	v := table.Resolve()
	selfKey := Key(selfPrefix)
	selfN := 0
	if v.Self != nil {
		selfN = 1
	}
	if n := len(v.Peers) + len(v.Rejected) + selfN; n != len(st.values) || table.Len() != len(st.values) {
		t.Fatalf("%d peers + %d rejected + %d self = %d, table.Len() = %d; bucket holds %d records",
			len(v.Peers), len(v.Rejected), selfN, n, table.Len(), len(st.values))
	}
	if v.SelfRevoked != st.revoked[self] {
		t.Fatalf("SelfRevoked = %v, bucket says %v", v.SelfRevoked, st.revoked[self])
	}
	want := expectedPeers(st, self, selfKey)
	got := map[wgtypes.Key]string{}
	for k, p := range v.Peers {
		got[k] = p.Key
		if p.PublicKey != k {
			t.Fatalf("peer filed under %s has key %s", k, p.PublicKey)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("peers (public key → bucket key) (-want +got):\n%s", diff)
	}
}

// expectedPeers is docs/contract.md §4's set rules written out plainly: among records that
// pass Check and are neither this host's prefix, its key, nor revoked, each
// public key goes to its oldest record.
func expectedPeers(st fuzzState, self wgtypes.Key, selfKey string) map[wgtypes.Key]string {
	// The oldest valid record of each key keeps it — the one at this
	// host's prefix too, which is never a peer itself.
	holder := map[wgtypes.Key]string{}
	for key, v := range st.values {
		acc, rej := rules6.Check(key, v, st.revs[key])
		if rej != nil || acc.PublicKey == self || st.revoked[acc.PublicKey] {
			continue
		}
		if cur, ok := holder[acc.PublicKey]; !ok || st.revs[key] < st.revs[cur] {
			holder[acc.PublicKey] = key
		}
	}
	for k, key := range holder {
		if key == selfKey {
			delete(holder, k)
		}
	}
	return holder
}
