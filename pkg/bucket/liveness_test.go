package bucket

import (
	"context"
	"errors"
	"net/netip"
	"strings"
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

// TestWriteHeartbeatFindsTheWriterBetween: each heartbeat after the first is
// written with compare-and-set on the previous one, and a write that finds
// the key moved on returns what stood there (another agent with the key)
// and still writes its own.
func TestWriteHeartbeatFindsTheWriterBetween(t *testing.T) {
	js, _, kv := newLiveBucketJS(t)
	ctx := context.Background()
	p := netip.MustParsePrefix("fd10:1::/48")
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	mine := Heartbeat{PublicKey: "K", Name: "a", At: at, Writer: Writer{Instance: "aaaa", Addr: "198.18.0.2"}}
	twin := Heartbeat{PublicKey: "K", Name: "a", At: at, Version: "v0.5.0", Writer: Writer{Instance: "bbbb", Addr: "198.18.0.3"}}

	rev, other, err := WriteHeartbeat(ctx, kv, p, mine, 0)
	if err != nil || other != nil {
		t.Fatalf("first heartbeat = %v, %v; want written, nothing found", other, err)
	}
	if rev, other, err = WriteHeartbeat(ctx, kv, p, mine, rev); err != nil || other != nil {
		t.Fatalf("heartbeat on its own previous one = %v, %v; want written, nothing found", other, err)
	}
	if _, _, err := WriteHeartbeat(ctx, kv, p, twin, 0); err != nil {
		t.Fatal(err)
	}
	rev, other, err = WriteHeartbeat(ctx, kv, p, mine, rev)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&twin, other); diff != "" {
		t.Errorf("heartbeat after another writer's found (-want +got):\n%s", diff)
	}
	got, err := Heartbeats(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(mine, got[p]); diff != "" {
		t.Errorf("the heartbeat stored after the write that found another (-want +got):\n%s", diff)
	}
	// A bucket made again meanwhile: nothing stands at the key, nothing is
	// found, the heartbeat is written.
	if err := js.DeleteKeyValue(ctx, kv.Bucket()); err != nil {
		t.Fatal(err)
	}
	if kv, err = OpenLiveBucket(ctx, js, "ikto-test", true, 0); err != nil {
		t.Fatal(err)
	}
	if _, other, err = WriteHeartbeat(ctx, kv, p, mine, rev); err != nil || other != nil {
		t.Errorf("heartbeat into a bucket made again = %v, %v; want written, nothing found", other, err)
	}
}

func TestDuplicateTrimmed(t *testing.T) {
	long := strings.Repeat("x", 500)
	d := Duplicate{Writer: Writer{Instance: long, Addr: long}}.Trimmed()
	if len(d.Instance) != 32 || len(d.Addr) != 45 {
		t.Errorf("trimmed to %d and %d bytes, want 32 and 45", len(d.Instance), len(d.Addr))
	}
	short := Duplicate{Writer: Writer{Instance: "0123456789abcdef", Addr: "fd00::1"}}
	if got := short.Trimmed(); got != short {
		t.Errorf("Trimmed changed %+v to %+v", short, got)
	}
}
