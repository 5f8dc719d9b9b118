package main

import (
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
	if diff := cmp.Diff(want, newEvictionReport(h, false, true)); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	// A record whose key is garbage is deleted with nothing to revoke.
	h.Record.PublicKey = "not-a-key"
	if got := newEvictionReport(h, true, false); got.RevokedKey != "" || !got.DryRun || got.Evicted {
		t.Errorf("report of a keyless record: %+v", got)
	}
}
