package bucket

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestHeartbeatKeyMatchesClaimKey(t *testing.T) {
	p := netip.MustParsePrefix("fd10:2082:5bc1::/48")
	if got, want := HeartbeatKey(p), "hb.ZmQxMDoyMDgyOjViYzE6Oi80OA=="; got != want {
		t.Errorf("HeartbeatKey = %s, want %s", got, want)
	}
	if got, _ := ParseHeartbeatKey(HeartbeatKey(p)); got != p {
		t.Errorf("ParseHeartbeatKey round trip = %s, want %s", got, p)
	}
	if peer.Key(p)[len(peer.PeersPrefix):] != HeartbeatKey(p)[len(HeartbeatPrefix):] {
		t.Error("heartbeat and claim keys encode the prefix differently")
	}
	for _, bad := range []string{"peers.ZmQ=", "hb.!!", "hb." + "bm90IGEgcHJlZml4"} {
		if _, err := ParseHeartbeatKey(bad); err == nil {
			t.Errorf("ParseHeartbeatKey(%q) succeeded", bad)
		}
	}
}

func TestHeartbeats(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()

	if got, err := Heartbeats(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Heartbeats(nil) = %v, %v; want empty", got, err)
	}
	if _, err := OpenLiveBucket(ctx, js, "ikto-test", false, 0); !errors.Is(err, ErrBucketMissing) {
		t.Fatalf("OpenLiveBucket without create = %v, want ErrBucketMissing", err)
	}
	kv, err := OpenLiveBucket(ctx, js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if kv.Bucket() != "ikto-test-live" {
		t.Errorf("bucket = %s, want ikto-test-live", kv.Bucket())
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != HeartbeatMaxAge || st.History() != 1 {
		t.Errorf("live bucket TTL %s history %d, want %s and 1", st.TTL(), st.History(), HeartbeatMaxAge)
	}
	if got, err := Heartbeats(ctx, kv); err != nil || len(got) != 0 {
		t.Errorf("Heartbeats of an empty bucket = %v, %v", got, err)
	}

	p1, p2 := netip.MustParsePrefix("fd10:1::/48"), netip.MustParsePrefix("fd10:2::/48")
	at := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	want := map[netip.Prefix]Heartbeat{
		p1: {PublicKey: "k1", Name: "a", At: at.Add(10 * time.Second), Version: "v1"},
		p2: {PublicKey: "k2", Name: "b", At: at},
	}
	for _, hb := range []struct {
		p  netip.Prefix
		hb Heartbeat
	}{{p1, Heartbeat{PublicKey: "k1", Name: "a", At: at}}, {p2, want[p2]}, {p1, want[p1]}} {
		if err := PutHeartbeat(ctx, kv, hb.p, hb.hb); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "hb.garbage", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := Heartbeats(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Heartbeats (-want +got):\n%s", diff)
	}
	// Opening again (a second agent) binds the same bucket.
	if _, err := OpenLiveBucket(ctx, js, "ikto-test", true, 0); err != nil {
		t.Errorf("reopen: %v", err)
	}
}
