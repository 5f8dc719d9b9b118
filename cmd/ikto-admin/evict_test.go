package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestEvict(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	ctx := context.Background()
	alpha := record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820)
	bravo := record(t, "bravo", "fd10:2::/48", 2, "198.18.0.3", 51820)
	put(t, kv, alpha)
	rev := put(t, kv, bravo)
	bravoKey := peer.Key(netip.MustParsePrefix(bravo.AllowedIP))

	code, stdout, stderr := exec(t, "evict", "fd10:2::1", "--dry-run", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "would evict bravo fd10:2::/48") || !strings.Contains(stdout, "dry run") {
		t.Errorf("evict --dry-run: exit %d\n%s%s", code, stdout, stderr)
	}
	if e, err := kv.Get(ctx, bravoKey); err != nil || e.Revision() != rev {
		t.Fatalf("after --dry-run, bravo's record: %v", err)
	}

	code, stdout, stderr = exec(t, "evict", "fd10:2::1", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicted bravo") {
		t.Fatalf("evict: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := kv.Get(ctx, bravoKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("bravo's record after evict: %v, want deleted", err)
	}
	revs, err := bucket.Revocations(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if rv := revs[testKey(t, 2)]; rv.Name != "bravo" || rv.AllowedIP != "fd10:2::/48" || len(revs) != 1 {
		t.Errorf("revocations after evict = %v", revs)
	}

	// Now nobody holds it: exit 1 with the address in the message.
	code, _, stderr = exec(t, "evict", "fd10:2::1", "--nats-url", url)
	if code != 1 || !strings.Contains(stderr, "no host holds fd10:2::1") {
		t.Errorf("evict of a free address: exit %d, %q", code, stderr)
	}
	// The prefix itself works as well as an address in it.
	code, stdout, stderr = exec(t, "evict", "fd10:1::/48", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicted alpha") {
		t.Errorf("evict by prefix: exit %d\n%s%s", code, stdout, stderr)
	}
}

// The attack of issue 19: host a publishes, at its own prefix, the record of
// bravo's key. Evicting a's prefix must not revoke bravo's key unless told:
// --keep-key deletes the copy and leaves the key; --revoke-key revokes it.
// A host is evicted by the name list shows; a name no record carries, or
// that two carry, is refused with what to give instead.
func TestEvictByName(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	put(t, kv, record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820))
	put(t, kv, record(t, "twin", "fd10:2::/48", 2, "198.18.0.3", 51820))
	put(t, kv, record(t, "twin", "fd10:3::/48", 3, "198.18.0.4", 51820))

	code, stdout, stderr := exec(t, "evict", "alpha", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicted alpha") {
		t.Fatalf("evict alpha: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48"))); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("alpha's record after evict by name: %v, want deleted", err)
	}
	for _, tc := range []struct{ name, want string }{
		{"nobody", `no host is named "nobody"`},
		{"twin", "2 records carry the name \"twin\" (fd10:2::/48, fd10:3::/48): evict by address instead"},
	} {
		code, _, stderr := exec(t, "evict", tc.name, "--nats-url", url)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("evict %s: exit %d, %q; want 2 and %q", tc.name, code, stderr, tc.want)
		}
	}
}

func TestEvictACopyOfAnotherHostsKey(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	ctx := context.Background()
	bravo := record(t, "bravo", "fd10:2::/48", 2, "198.18.0.3", 51820)
	put(t, kv, bravo)
	planted := bravo
	planted.AllowedIP = "fd10:1::/48"
	put(t, kv, planted)
	plantedKey := peer.Key(netip.MustParsePrefix(planted.AllowedIP))

	for _, args := range [][]string{{"--dry-run"}, {}} {
		code, stdout, stderr := exec(t, append([]string{"evict", "fd10:1::1", "--nats-url", url}, args...)...)
		if code != 1 || !strings.Contains(stderr, "also has a record at fd10:2::/48") ||
			!strings.Contains(stderr, "--keep-key") || !strings.Contains(stderr, "--revoke-key") {
			t.Errorf("evict %q of a copy: exit %d, want 1 naming the other record and both choices\n%s%s", args, code, stdout, stderr)
		}
	}
	code, stdout, stderr := exec(t, "evict", "fd10:1::1", "--keep-key", "--dry-run", "-o", "json", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, `"revoked_key": ""`) || !strings.Contains(stdout, `"fd10:2::/48"`) {
		t.Errorf("evict --keep-key --dry-run -o json: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = exec(t, "evict", "fd10:1::1", "--keep-key", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "stays valid") {
		t.Fatalf("evict --keep-key: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := kv.Get(ctx, plantedKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the copy after evict --keep-key: %v, want deleted", err)
	}
	if revs, err := bucket.Revocations(ctx, kv); err != nil || len(revs) != 0 {
		t.Errorf("revocations after evict --keep-key = %v, %v; want none", revs, err)
	}

	put(t, kv, planted)
	code, _, stderr = exec(t, "evict", "fd10:1::1", "--keep-key", "--revoke-key", "--nats-url", url)
	if code != 2 {
		t.Errorf("--keep-key with --revoke-key: exit %d, want 2 (usage)\n%s", code, stderr)
	}
	code, stdout, stderr = exec(t, "evict", "fd10:1::1", "--revoke-key", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicted bravo") {
		t.Fatalf("evict --revoke-key: exit %d\n%s%s", code, stdout, stderr)
	}
	if revs, _ := bucket.Revocations(ctx, kv); len(revs) != 1 {
		t.Errorf("revocations after evict --revoke-key = %v, want bravo's key", revs)
	}
}

func TestUnrevoke(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	pk := testKey(t, 3)
	if err := bucket.Revoke(context.Background(), kv, pk, peer.Record{Name: "c"}, now, bucket.Operator{}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := exec(t, "unrevoke", pk.String(), "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "unrevoked "+pk.String()) {
		t.Errorf("unrevoke: exit %d\n%s%s", code, stdout, stderr)
	}
	if revs, _ := bucket.Revocations(context.Background(), kv); len(revs) != 0 {
		t.Errorf("revocations after unrevoke = %v", revs)
	}
	code, _, stderr = exec(t, "unrevoke", pk.String(), "--nats-url", url)
	if code != 1 || !strings.Contains(stderr, "is not revoked") {
		t.Errorf("unrevoke of a key not revoked: exit %d, %q", code, stderr)
	}

	if err := bucket.Revoke(context.Background(), kv, pk, peer.Record{Name: "c"}, now, bucket.Operator{}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = exec(t, "unrevoke", pk.String(), "-o", "json", "--nats-url", url)
	if code != 0 {
		t.Fatalf("unrevoke -o json: exit %d: %s", code, stderr)
	}
	var got unrevoked
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("unrevoke -o json printed %q: %v", stdout, err)
	}
	if want := (unrevoked{PublicKey: pk.String(), Key: peer.RevokedKey(pk), Unrevoked: true}); got != want {
		t.Errorf("unrevoke -o json = %+v, want %+v", got, want)
	}
}
