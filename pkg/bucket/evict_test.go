package bucket

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

func claimT(t *testing.T, kv jetstream.KeyValue, rec peer.Record) uint64 {
	t.Helper()
	rev := mustClaim(t, context.Background(), kv, rec)
	return rev
}

func TestFindHolder(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	a := newRecord(t, "a", "fd10:1::/48")
	b := newRecord(t, "b", "fd10:2::/48")
	revA := claimT(t, kv, a)
	claimT(t, kv, b)
	// A rogue record covering the whole mesh must not shadow the real holder,
	// and garbage under a key is still found through the key's prefix.
	rogue := newRecord(t, "rogue", "fd10::/16")
	if _, err := kv.Put(ctx, peer.Key(netip.MustParsePrefix("fd10::/16")), rogue.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, peer.Key(netip.MustParsePrefix("fd10:3::/48")), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "unrelated", []byte("x")); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		target   string
		wantName string
		wantKey  string
	}{
		{"fd10:1::/48", "a", peer.Key(netip.MustParsePrefix("fd10:1::/48"))},
		{"fd10:1::1/128", "a", peer.Key(netip.MustParsePrefix("fd10:1::/48"))},
		{"fd10:1:0:5::/64", "a", peer.Key(netip.MustParsePrefix("fd10:1::/48"))},
		{"fd10:2:0:ffff::/128", "b", peer.Key(netip.MustParsePrefix("fd10:2::/48"))},
		{"fd10:3::9/128", "", peer.Key(netip.MustParsePrefix("fd10:3::/48"))},
		{"fd10:9::1/128", "rogue", peer.Key(netip.MustParsePrefix("fd10::/16"))},
	} {
		h, err := FindHolder(ctx, kv, netip.MustParsePrefix(tc.target))
		if err != nil {
			t.Errorf("FindHolder(%s): %v", tc.target, err)
			continue
		}
		if h.Record.Name != tc.wantName || h.Key != tc.wantKey {
			t.Errorf("FindHolder(%s) = %s %q, want %s %q", tc.target, h.Key, h.Record.Name, tc.wantKey, tc.wantName)
		}
	}
	h, _ := FindHolder(ctx, kv, netip.MustParsePrefix("fd10:1::1/128"))
	if h.Revision != revA || h.Record != a {
		t.Errorf("holder of a = %+v, want record %+v at revision %d", h, a, revA)
	}
	for _, target := range []string{"fd11::1/128", "10.0.0.1/32", "fd00::/8"} {
		if _, err := FindHolder(ctx, kv, netip.MustParsePrefix(target)); !errors.Is(err, ErrNoHolder) {
			t.Errorf("FindHolder(%s) = %v, want ErrNoHolder", target, err)
		}
	}
}

func TestEvictRevokesThenDeletes(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	a := newRecord(t, "a", "fd10:1::/48")
	claimT(t, kv, a)
	h, err := FindHolder(ctx, kv, netip.MustParsePrefix("fd10:1::1/128"))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if err := Evict(ctx, nil, kv, h.Key, h.Revision, h.Record, Operator{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, h.Key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("record after Evict: %v, want it deleted", err)
	}
	pk, _ := wgtypes.ParseKey(a.PublicKey)
	revs, err := Revocations(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := revs[pk]
	if !ok || len(revs) != 1 {
		t.Fatalf("Revocations = %v, want only %s", revs, pk)
	}
	if got.RevokedAt.Before(before) || got.RevokedAt.After(time.Now()) {
		t.Errorf("revoked_at = %s, want about now", got.RevokedAt)
	}
	want := peer.Revocation{PublicKey: a.PublicKey, AllowedIP: a.AllowedIP, Name: "a", RevokedAt: got.RevokedAt}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("revocation (-want +got):\n%s", diff)
	}
	// The stored JSON carries the docs/contract.md §4 names.
	e, err := kv.Get(ctx, peer.RevokedKey(pk))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(e.Value(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"public_key", "allowed_ip", "name", "revoked_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("revocation JSON %s lacks %q", e.Value(), f)
		}
	}

	// A retry (the first try's answer was lost) succeeds and keeps the first
	// revocation time.
	if err := Evict(ctx, nil, kv, h.Key, h.Revision, h.Record, Operator{}); err != nil {
		t.Errorf("second Evict: %v", err)
	}
	revs, _ = Revocations(ctx, kv)
	if !revs[pk].RevokedAt.Equal(got.RevokedAt) {
		t.Errorf("retry changed revoked_at from %s to %s", got.RevokedAt, revs[pk].RevokedAt)
	}
}

func TestEvictLosesToANewerRecord(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	a := newRecord(t, "a", "fd10:1::/48")
	rev := claimT(t, kv, a)
	// The agent restarts and refreshes its claim after the operator read it.
	mustClaim(t, ctx, kv, a)
	key := peer.Key(netip.MustParsePrefix("fd10:1::/48"))
	err := Evict(ctx, nil, kv, key, rev, a, Operator{})
	if !errors.Is(err, ErrRecordChanged) {
		t.Fatalf("Evict at a stale revision = %v, want ErrRecordChanged", err)
	}
	if _, err := kv.Get(ctx, key); err != nil {
		t.Errorf("record after a lost evict: %v, want it kept", err)
	}
	// The key is revoked anyway: the revocation is written first.
	pk, _ := wgtypes.ParseKey(a.PublicKey)
	if revs, _ := Revocations(ctx, kv); len(revs) != 1 || revs[pk].Name != "a" {
		t.Errorf("Revocations = %v, want a's key", revs)
	}
}

func TestEvictGarbageOnlyDeletes(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	key := peer.Key(netip.MustParsePrefix("fd10:3::/48"))
	rev, err := kv.Put(ctx, key, []byte("garbage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Evict(ctx, nil, kv, key, rev, peer.Record{}, Operator{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("garbage after Evict: %v, want it deleted", err)
	}
	if revs, _ := Revocations(ctx, kv); len(revs) != 0 {
		t.Errorf("Revocations = %v, want none", revs)
	}
}

func TestUnrevoke(t *testing.T) {
	kv := newBucket(t)
	ctx := context.Background()
	k, _ := wgtypes.GeneratePrivateKey()
	pk := k.PublicKey()
	if err := Unrevoke(ctx, nil, kv, pk, Operator{}); !errors.Is(err, ErrNotRevoked) {
		t.Fatalf("Unrevoke of a key never revoked = %v, want ErrNotRevoked", err)
	}
	if err := Revoke(ctx, kv, pk, peer.Record{Name: "x"}, time.Now(), Operator{}); err != nil {
		t.Fatal(err)
	}
	// A damaged revocation value still revokes and still lists.
	k2, _ := wgtypes.GeneratePrivateKey()
	if _, err := kv.Put(ctx, peer.RevokedKey(k2.PublicKey()), []byte("{")); err != nil {
		t.Fatal(err)
	}
	revs, err := Revocations(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 || revs[k2.PublicKey()].PublicKey != k2.PublicKey().String() {
		t.Errorf("Revocations = %v, want both keys", revs)
	}
	if err := Unrevoke(ctx, nil, kv, pk, Operator{}); err != nil {
		t.Fatal(err)
	}
	if err := Unrevoke(ctx, nil, kv, pk, Operator{}); !errors.Is(err, ErrNotRevoked) {
		t.Errorf("second Unrevoke = %v, want ErrNotRevoked", err)
	}
	revs, _ = Revocations(ctx, kv)
	if _, ok := revs[pk]; ok || len(revs) != 1 {
		t.Errorf("Revocations after Unrevoke = %v, want only the damaged one", revs)
	}
}

func TestScanEmptyBucket(t *testing.T) {
	kv := newBucket(t)
	entries, err := Scan(context.Background(), kv, peer.PeersPrefix+">")
	if err != nil || len(entries) != 0 {
		t.Errorf("Scan of an empty bucket = %v, %v; want nothing", entries, err)
	}
}

// With an operator key, evict signs what it writes: the revocation and
// the delete marker's command verify under the mesh's rules and that key.
func TestEvictSignedByAnOperator(t *testing.T) {
	js, kv := newBucketJS(t)
	ctx := context.Background()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	rules := peer.Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48, Bucket: kv.Bucket(), Operators: []ed25519.PublicKey{pub}}
	a := newRecord(t, "a", "fd10:1::/48")
	a.Seq = 42
	claimT(t, kv, a)
	h, err := FindHolder(ctx, kv, netip.MustParsePrefix("fd10:1::/48"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	if err := Evict(ctx, js, kv, h.Key, h.Revision, h.Record, Operator{Rules: rules, Key: priv}); err != nil {
		t.Fatal(err)
	}
	pk, _ := wgtypes.ParseKey(a.PublicKey)
	var marker, revocation jetstream.KeyValueEntry
	for marker == nil || revocation == nil {
		select {
		case e := <-w.Updates():
			switch {
			case e == nil:
			case e.Key() == h.Key && e.Operation() == jetstream.KeyValueDelete:
				marker = e
			case e.Key() == peer.RevokedKey(pk):
				revocation = e
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("marker %v, revocation %v: want both", marker, revocation)
		}
	}
	c, named, err := rules.ParseCommand(h.Key, marker.Value())
	if err != nil || named != pk || c.Seq != 42 {
		t.Errorf("the marker's command: %+v for %s, %v; want one for %s up to seq 42", c, named, err, pk)
	}
	if err := rules.RevocationCounts(pk, revocation.Value()); err != nil {
		t.Errorf("the revocation: %v", err)
	}
}
