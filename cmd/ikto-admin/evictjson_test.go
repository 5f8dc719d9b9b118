package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestEvictionReport(t *testing.T) {
	rec := record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820)
	h := bucket.Holder{Key: peer.Key(netip.MustParsePrefix(rec.AllowedIP)), Revision: 7, Record: rec, Prefix: netip.MustParsePrefix(rec.AllowedIP)}
	want := evictionReport{Key: h.Key, Revision: 7, Name: "alpha", AllowedIP: "fd10:1::/48", PublicKey: rec.PublicKey,
		RevokedKey: peer.RevokedKey(testKey(t, 1)), Evicted: true}
	if diff := cmp.Diff(want, newEvictionReport(eviction{holder: h, revoke: true}, false, true)); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	// A record whose key is garbage is deleted with nothing to revoke.
	h.Record.PublicKey = "not-a-key"
	if got := newEvictionReport(eviction{holder: h, revoke: true}, true, false); got.RevokedKey != "" || !got.DryRun || got.Evicted {
		t.Errorf("report of a keyless record: %+v", got)
	}
}

func TestEvictJSON(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	rec := record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820)
	rev := put(t, kv, rec)
	want := evictionReport{Key: peer.Key(netip.MustParsePrefix(rec.AllowedIP)), Revision: rev, Name: "alpha",
		AllowedIP: rec.AllowedIP, PublicKey: rec.PublicKey, RevokedKey: peer.RevokedKey(testKey(t, 1))}
	for _, dry := range []bool{true, false} {
		args := []string{"evict", "fd10:1::1", "-o", "json", "--nats-url", url}
		if dry {
			args = append(args, "--dry-run")
		}
		code, stdout, stderr := exec(t, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		var got evictionReport
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("%q printed %q: %v", args, stdout, err)
		}
		want.DryRun, want.Evicted = dry, !dry
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", args, diff)
		}
	}
	if revs, _ := bucket.Revocations(context.Background(), kv); len(revs) != 1 {
		t.Errorf("revocations after evict -o json: %v", revs)
	}
}
