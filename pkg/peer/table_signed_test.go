package peer

import (
	"crypto/ed25519"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
)

// signedRules is the mesh of these tests: records are signed for bucket
// "ikto-test".
var signedRules = Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48, Bucket: "ikto-test"}

// host is a test host that signs its records.
type host struct {
	priv wgtypes.Key
	pub  wgtypes.Key
	name string
}

func newHost(t testing.TB, name string) host {
	t.Helper()
	k := wgtest.PrivateKey(t)
	return host{priv: k, pub: k.PublicKey(), name: name}
}

// record is h's record of prefix with seq, signed under ru.
func (h host) record(t testing.TB, ru Rules, prefix string, seq uint64) Record {
	t.Helper()
	r := Record{Name: h.name, PublicKey: h.pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: prefix, WGPort: 51820, Seq: seq}
	if err := ru.SignRecord(&r, h.priv); err != nil {
		t.Fatal(err)
	}
	return r
}

// signedFixture is a table for host "self" at fd10:1::/48, fed with
// revisions in order.
type signedFixture struct {
	t     *testing.T
	rules Rules
	self  host
	table *Table
	rev   uint64
}

func newSignedFixture(t *testing.T, ru Rules) *signedFixture {
	f := &signedFixture{t: t, rules: ru, self: newHost(t, "self")}
	f.table = NewTable(ru, f.self.pub, netip.MustParsePrefix("fd10:1::/48"))
	return f
}

func (f *signedFixture) put(key string, value []byte) uint64 {
	f.rev++
	f.table.Put(key, value, f.rev)
	return f.rev
}

// at writes r at the key of its own prefix, or of prefix when given.
func (f *signedFixture) at(r Record, prefix ...string) string {
	p := r.AllowedIP
	if len(prefix) > 0 {
		p = prefix[0]
	}
	key := Key(netip.MustParsePrefix(p))
	f.put(key, r.Encode())
	return key
}

func (f *signedFixture) del(key string, body []byte) {
	f.rev++
	f.table.Delete(key, body, f.rev)
}

// where is each accepted peer's prefix, by name.
func (f *signedFixture) where() map[string]string {
	out := map[string]string{}
	for _, a := range f.table.Resolve().Peers {
		out[a.Name] = a.AllowedIP
	}
	return out
}

func (f *signedFixture) reason(key string) Reason {
	for _, r := range f.table.Resolve().Rejected {
		if r.Key == key {
			return r.Reason
		}
	}
	return ""
}

func (f *signedFixture) want(want map[string]string) {
	f.t.Helper()
	if diff := cmp.Diff(want, f.where()); diff != "" {
		f.t.Fatalf("accepted peers (-want +got):\n%s", diff)
	}
}

// Copies of a signed record anywhere else, or with any field changed,
// route nothing: the signature covers the prefix, and the key must encode
// it.
func TestForgedRecordsRouteNothing(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	b := newHost(t, "bravo")
	rec := b.record(t, f.rules, "fd10:2::/48", 10)
	f.at(rec)

	copied := f.at(rec, "fd10:3::/48")
	moved := rec
	moved.AllowedIP = "fd10:4::/48"
	forged := f.at(moved)
	redirected := rec
	redirected.AdvertiseAddress = "198.18.0.66"
	f.at(redirected, "fd10:5::/48") // key mismatch too
	otherMesh := rec
	otherMesh.AllowedIP = "fd10:6::/48"
	if err := (Rules{Mesh: f.rules.Mesh, Bits: 48, Bucket: "another-mesh"}).SignRecord(&otherMesh, b.priv); err != nil {
		t.Fatal(err)
	}
	replayed := f.at(otherMesh)
	ownPrefix := f.at(rec, "fd10:1::/48") // over this host's own claim

	f.want(map[string]string{"bravo": "fd10:2::/48"})
	for key, want := range map[string]Reason{
		copied: ReasonKeyMismatch, forged: ReasonBadSignature, replayed: ReasonBadSignature, ownPrefix: ReasonKeyMismatch,
	} {
		if got := f.reason(key); got != want {
			t.Errorf("%s: reason %q, want %q", key, got, want)
		}
	}
	if v := f.table.Resolve(); v.SelfRejected == nil || v.SelfRejected.Reason != ReasonKeyMismatch {
		t.Errorf("own prefix under a copy: SelfRejected = %+v, want key_mismatch (the host restores its record)", v.SelfRejected)
	}
}

// A host's record stays accepted while the bucket loses it or someone
// writes over it (state, not a statement), and it is listed as missing
// for any agent to write back.
func TestLostOrOverwrittenRecordStays(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	b, c := newHost(t, "bravo"), newHost(t, "charlie")
	bkey := f.at(b.record(t, f.rules, "fd10:2::/48", 10))
	f.at(c.record(t, f.rules, "fd10:3::/48", 10))
	f.want(map[string]string{"bravo": "fd10:2::/48", "charlie": "fd10:3::/48"})

	f.put(bkey, []byte("garbage"))
	f.want(map[string]string{"bravo": "fd10:2::/48", "charlie": "fd10:3::/48"})
	if got := f.reason(bkey); got != ReasonMalformed {
		t.Errorf("garbage over bravo: reason %q", got)
	}

	// A snapshot of a bucket made again: only charlie's record is there.
	f.table.Reset()
	f.at(c.record(t, f.rules, "fd10:3::/48", 10))
	f.want(map[string]string{"bravo": "fd10:2::/48", "charlie": "fd10:3::/48"})
	missing := f.table.Missing()
	if len(missing) != 1 || missing[0].Key != bkey || !missing[0].Signed() {
		t.Fatalf("Missing = %+v, want bravo's signed record", missing)
	}
}

// A move is a newer signed record: applied at once; the old record is
// superseded, and a replay of it is ignored, also after a snapshot.
func TestMoveIsTheNewerRecord(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	b := newHost(t, "bravo")
	old := b.record(t, f.rules, "fd10:2::/48", 10)
	oldKey := f.at(old)
	f.at(b.record(t, f.rules, "fd10:7::/48", 11))
	f.want(map[string]string{"bravo": "fd10:7::/48"})
	if got := f.reason(oldKey); got != ReasonSuperseded {
		t.Errorf("old record: reason %q, want superseded", got)
	}
	f.del(oldKey, nil) // bravo releases it: no command, it follows nothing accepted
	f.table.Reset()
	f.at(old) // a replay into a fresh snapshot
	f.want(map[string]string{"bravo": "fd10:7::/48"})

	// The old prefix is free for another key.
	c := newHost(t, "charlie")
	f.at(c.record(t, f.rules, "fd10:2::/48", 5))
	f.want(map[string]string{"bravo": "fd10:7::/48", "charlie": "fd10:2::/48"})
}

// A prefix stays with the key that held it first while that key's record
// stands, even when the bucket shows another key's signed record there.
func TestPrefixStaysWithItsHolder(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	b, m := newHost(t, "bravo"), newHost(t, "mallory")
	bkey := f.at(b.record(t, f.rules, "fd10:2::/48", 10))
	f.at(m.record(t, f.rules, "fd10:2::/48", 99)) // over bravo's claim
	f.want(map[string]string{"bravo": "fd10:2::/48"})
	if got := f.reason(bkey); got != ReasonPrefixTaken {
		t.Errorf("mallory at bravo's prefix: reason %q, want prefix_taken", got)
	}
	f.at(b.record(t, f.rules, "fd10:2::/48", 11)) // bravo restores it
	f.want(map[string]string{"bravo": "fd10:2::/48"})
	if got := f.reason(bkey); got != "" {
		t.Errorf("bravo's record back: reason %q, want none", got)
	}
	// bravo moves away: the prefix is free.
	f.at(b.record(t, f.rules, "fd10:8::/48", 12))
	f.at(m.record(t, f.rules, "fd10:2::/48", 100))
	f.want(map[string]string{"bravo": "fd10:8::/48", "mallory": "fd10:2::/48"})
}

// Which deletes are commands: a marker signed by the record's key or by a
// trusted operator key removes it; a plain marker does only where no
// operator key is trusted; an old command does not remove a newer record.
func TestCommands(t *testing.T) {
	op, opPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, strangerPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	withOps := signedRules
	withOps.Operators = []ed25519.PublicKey{op}
	type marker func(ru Rules, key string, b host, seq uint64) []byte
	plain := func(Rules, string, host, uint64) []byte { return nil }
	byHost := func(ru Rules, key string, b host, seq uint64) []byte {
		c, err := ru.HostCommand(key, b.priv, seq)
		if err != nil {
			t.Fatal(err)
		}
		return c.Encode()
	}
	byOperator := func(ru Rules, key string, b host, seq uint64) []byte {
		return ru.OperatorCommand(key, b.pub, seq, opPriv).Encode()
	}
	byStranger := func(ru Rules, key string, b host, seq uint64) []byte {
		return ru.OperatorCommand(key, b.pub, seq, strangerPriv).Encode()
	}
	for _, tc := range []struct {
		name    string
		rules   Rules
		marker  marker
		seq     uint64 // the seq the command names; the record's is 10
		removed bool
	}{
		{"plain, no operator keys", signedRules, plain, 0, true},
		{"plain, operator keys", withOps, plain, 0, false},
		{"the host's own", withOps, byHost, 10, true},
		{"an operator's", withOps, byOperator, 10, true},
		{"an operator's, no operator keys trusted", signedRules, byOperator, 10, false},
		{"an untrusted key's", withOps, byStranger, 10, false},
		{"an operator's, older than the record", withOps, byOperator, 9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSignedFixture(t, tc.rules)
			b := newHost(t, "bravo")
			key := f.at(b.record(t, f.rules, "fd10:2::/48", 10))
			f.want(map[string]string{"bravo": "fd10:2::/48"})
			f.del(key, tc.marker(f.rules, key, b, tc.seq))
			if _, ok := f.table.Resolve().Peers[b.pub]; ok == tc.removed {
				t.Fatalf("accepted after the marker: %v, want %v", ok, !tc.removed)
			}
			if tc.removed {
				// Removed for good: a replay of the record changes nothing.
				f.at(b.record(t, f.rules, "fd10:2::/48", 10))
				f.want(map[string]string{})
				// A newer record (the host, unrevoked, claiming again) counts.
				f.at(b.record(t, f.rules, "fd10:2::/48", 11))
				f.want(map[string]string{"bravo": "fd10:2::/48"})
			}
		})
	}
}

// This host's own record: a command removing it is an eviction, even when
// the table sees it first in a snapshot; garbage or an old record of its own
// over it is a contest to restore, never an eviction.
func TestOwnRecord(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	own := f.self.record(t, f.rules, "fd10:1::/48", 20)
	key := Key(netip.MustParsePrefix("fd10:1::/48"))
	f.table.Recall(key, own.Encode(), 1)
	f.at(own)
	if d := f.table.Update(); d.Self == nil || d.Self.PublicKey != f.self.pub || d.SelfRejected != nil || d.SelfEvicted != "" {
		t.Fatalf("own record: %+v", d)
	}
	f.at(f.self.record(t, f.rules, "fd10:1::/48", 19)) // an older one, replayed
	if d := f.table.Update(); d.SelfRejected == nil || d.SelfRejected.Reason != ReasonSuperseded {
		t.Fatalf("an older own record at own key: SelfRejected = %+v, want superseded", d.SelfRejected)
	}
	leftover := f.at(f.self.record(t, f.rules, "fd10:9::/48", 5))
	if got := f.reason(leftover); got != ReasonOwnKey {
		t.Errorf("own key elsewhere: reason %q, want own_public_key", got)
	}
	if len(f.where()) != 0 {
		t.Fatalf("own key accepted as a peer: %v", f.where())
	}

	g := newSignedFixture(t, signedRules)
	g.self = f.self
	g.table = NewTable(signedRules, g.self.pub, netip.MustParsePrefix("fd10:1::/48"))
	g.table.Recall(key, own.Encode(), 1)
	g.del(key, nil) // a snapshot that starts with a plain marker
	if d := g.table.Update(); d.SelfEvicted == "" {
		t.Fatalf("own record deleted: %+v, want SelfEvicted", d)
	}
}

// Unsigned records (ikto 0.3.0's) count for keys never seen signed, while
// they are in the bucket; with signatures required, never.
func TestUnsignedRecords(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	old := newHost(t, "old")
	r := Record{Name: "old", PublicKey: old.pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: "fd10:2::/48", WGPort: 51820}
	key := f.at(r)
	f.want(map[string]string{"old": "fd10:2::/48"})
	f.del(key, nil)
	f.want(map[string]string{})

	b := newHost(t, "bravo")
	f.at(b.record(t, f.rules, "fd10:3::/48", 10))
	copyOfB := Record{Name: "bravo", PublicKey: b.pub.String(), AdvertiseAddress: "198.18.0.66", AllowedIP: "fd10:4::/48", WGPort: 51820}
	ck := f.at(copyOfB)
	f.want(map[string]string{"bravo": "fd10:3::/48"})
	if got := f.reason(ck); got != ReasonUnsigned {
		t.Errorf("unsigned record of a signing key: reason %q, want unsigned", got)
	}

	req := signedRules
	req.Require = true
	g := newSignedFixture(t, req)
	uk := g.at(r)
	g.want(map[string]string{})
	if got := g.reason(uk); got != ReasonUnsigned {
		t.Errorf("require: reason %q, want unsigned", got)
	}
}

// With operator keys, only a signed revocation counts.
func TestSignedRevocation(t *testing.T) {
	op, opPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ru := signedRules
	ru.Operators = []ed25519.PublicKey{op}
	f := newSignedFixture(t, ru)
	b := newHost(t, "bravo")
	f.at(b.record(t, f.rules, "fd10:2::/48", 10))
	rv := Revocation{PublicKey: b.pub.String(), Name: "bravo", AllowedIP: "fd10:2::/48"}
	f.put(RevokedKey(b.pub), []byte(`{}`))
	f.want(map[string]string{"bravo": "fd10:2::/48"})
	if got := f.reason(RevokedKey(b.pub)); got != ReasonBadSignature {
		t.Errorf("unsigned revocation: reason %q, want bad_signature", got)
	}
	ru.SignRevocation(&rv, opPriv)
	f.put(RevokedKey(b.pub), mustJSON(t, rv))
	f.want(map[string]string{})
	f.del(RevokedKey(b.pub), nil) // a plain unrevoke
	f.want(map[string]string{})
	c := ru.OperatorCommand(RevokedKey(b.pub), b.pub, 0, opPriv)
	f.del(RevokedKey(b.pub), c.Encode())
	f.want(map[string]string{"bravo": "fd10:2::/48"})
}

// Deleting a record of this host's key elsewhere — its own older record,
// which it releases, or anyone's copy — is never its eviction.
func TestReleaseElsewhereIsNoEviction(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	own := f.self.record(t, f.rules, "fd10:1::/48", 20)
	f.table.Recall(Key(netip.MustParsePrefix("fd10:1::/48")), own.Encode(), 1)
	f.at(own)
	older := f.at(f.self.record(t, f.rules, "fd10:9::/48", 5))
	unsigned := Record{Name: "copy", PublicKey: f.self.pub.String(), AdvertiseAddress: "198.18.0.66", AllowedIP: "fd10:8::/48", WGPort: 51820}
	copied := f.at(unsigned)
	f.del(older, nil)
	f.del(copied, nil)
	if d := f.table.Update(); d.SelfEvicted != "" || d.Self == nil {
		t.Fatalf("after deleting records of its key elsewhere: %+v, want its claim held", d)
	}
}

// A key rotation: the new key's record, handed over by the old key, takes
// the prefix at once; nothing the old key signed counts afterwards, and a
// handover the old key did not sign is refused.
func TestKeyRotation(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	old, next, mallory := newHost(t, "bravo"), newHost(t, "bravo"), newHost(t, "mallory")
	oldRec := old.record(t, f.rules, "fd10:2::/48", 10)
	key := f.at(oldRec)
	f.want(map[string]string{"bravo": "fd10:2::/48"})

	forged := Record{Name: "mallory", PublicKey: mallory.pub.String(), AdvertiseAddress: "198.18.0.66", AllowedIP: "fd10:2::/48", WGPort: 51820, Seq: 11}
	if err := f.rules.SignHandover(&forged, mallory.priv); err != nil {
		t.Fatal(err)
	}
	forged.Handover.From = old.pub.String() // claims to come from bravo's old key
	if err := f.rules.SignRecord(&forged, mallory.priv); err != nil {
		t.Fatal(err)
	}
	f.at(forged)
	f.want(map[string]string{"bravo": "fd10:2::/48"})
	if got := f.reason(key); got != ReasonBadSignature {
		t.Errorf("a handover bravo did not sign: reason %q, want bad_signature", got)
	}

	r := handoverRecord(t, f.rules, old, next, "fd10:2::/48", 11)
	f.at(r)
	if p, ok := f.table.Resolve().Peers[next.pub]; !ok || p.AllowedIP != "fd10:2::/48" {
		t.Fatalf("after the handover: %v, want the new key at fd10:2::/48", f.table.Resolve().Peers)
	}
	if _, ok := f.table.Resolve().Peers[old.pub]; ok {
		t.Fatal("the old key is still a peer")
	}
	// Whatever the old key signs now, even a higher seq, counts for nothing.
	late := f.at(old.record(t, f.rules, "fd10:3::/48", 99))
	if _, ok := f.table.Resolve().Peers[old.pub]; ok || f.reason(late) != ReasonSuperseded {
		t.Fatalf("a record of the retired key: peers %v, reason %q", f.table.Resolve().Peers, f.reason(late))
	}
}

// This host rotating its key: after Rotate, the record handed over from its
// old key is its own claim, held; the old key's retirement is no eviction.
func TestOwnKeyRotation(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	f.claim()
	next := newHost(t, "self")
	f.table.Rotate(next.pub)
	r := handoverRecord(t, f.rules, f.self, next, "fd10:1::/48", 21)
	f.at(r)
	if d := f.table.Update(); d.SelfEvicted != "" || d.Self == nil || d.Self.PublicKey != next.pub || d.SelfRejected != nil {
		t.Fatalf("after rotating: %+v, want the new key's claim held", d)
	}
	if len(f.where()) != 0 {
		t.Fatalf("peers %v, want none (the old key is this host's retired key)", f.where())
	}
}

// Another host releases a copy of its key sitting on this host's claim
// with a command signed by its own key: in a snapshot that starts with that
// marker (this host missed the copy), it is no eviction of this host.
func TestAnotherHostsReleaseAtOurKeyIsNoEviction(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	key := f.claim()
	f.table.Update()
	s1 := newHost(t, "s1")
	f.table.Reset()
	c, err := f.rules.HostCommand(key, s1.priv, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.del(key, c.Encode())
	if d := f.table.Update(); d.SelfEvicted != "" {
		t.Fatalf("another host's release at this host's key evicted it: %q", d.SelfEvicted)
	}
}

// This host releasing its own older record (a command signed by its key up
// to that record's seq) is no eviction: its current record has a higher
// seq.
func TestOwnReleaseIsNoEviction(t *testing.T) {
	f := newSignedFixture(t, signedRules)
	f.claim()
	older := f.at(f.self.record(t, f.rules, "fd10:9::/48", 5))
	c, err := f.rules.HostCommand(older, f.self.priv, 5)
	if err != nil {
		t.Fatal(err)
	}
	f.del(older, c.Encode())
	if d := f.table.Update(); d.SelfEvicted != "" || d.Self == nil {
		t.Fatalf("after releasing its older record: %+v, want its claim held", d)
	}
}

// claim gives the fixture's host its own signed record at fd10:1::/48, as
// an agent's claim does (recalled, then seen in the bucket), and returns
// its key.
func (f *signedFixture) claim() string {
	key := Key(netip.MustParsePrefix("fd10:1::/48"))
	own := f.self.record(f.t, f.rules, "fd10:1::/48", 20)
	f.table.Recall(key, own.Encode(), 1)
	f.at(own)
	return key
}

// handoverRecord is next's record of prefix with seq, handed over by from.
func handoverRecord(t *testing.T, ru Rules, from, next host, prefix string, seq uint64) Record {
	t.Helper()
	r := Record{Name: next.name, PublicKey: next.pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: prefix, WGPort: 51820, Seq: seq}
	if err := ru.SignHandover(&r, from.priv); err != nil {
		t.Fatal(err)
	}
	if err := ru.SignRecord(&r, next.priv); err != nil {
		t.Fatal(err)
	}
	return r
}
