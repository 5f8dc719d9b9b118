package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Revocations the bucket lost are written back, once: a second request
// finds them there and leaves them as they are.
func TestKeeperWritesLostRevocationsBack(t *testing.T) {
	ctx := context.Background()
	k, kv, actions := newKeeper(t)
	var lost []peer.Lost
	var keys []wgtypes.Key
	for range 2 {
		sk := wgtest.PrivateKey(t)
		keys = append(keys, sk.PublicKey())
		v, _ := json.Marshal(peer.Revocation{PublicKey: sk.PublicKey().String(), Name: "as it was"})
		lost = append(lost, peer.Lost{Key: peer.RevokedKey(sk.PublicKey()), Value: v})
	}
	for range 2 {
		if err := k.repair(ctx, peer.Repair{Revoke: lost}); err != nil {
			t.Fatal(err)
		}
	}
	for _, pk := range keys {
		e, err := kv.Get(ctx, peer.RevokedKey(pk))
		if err != nil {
			t.Fatalf("revocation of %s: %v", pk, err)
		}
		var rv peer.Revocation
		if err := json.Unmarshal(e.Value(), &rv); err != nil || rv.PublicKey != pk.String() || rv.Name != "as it was" || e.Revision() > 2 {
			t.Fatalf("revocation of %s = %s (revision %d, err %v)", pk, e.Value(), e.Revision(), err)
		}
	}
	if len(*actions) != 2 {
		t.Errorf("actions %q, want one revoke per revocation written (the second round finds them there)", *actions)
	}
}

// Signed records the bucket lost are written back with Create: once, and
// never over a value that is there.
func TestKeeperWritesLostRecordsBack(t *testing.T) {
	ctx := context.Background()
	k, kv, actions := newKeeper(t)
	lost := peer.Lost{Key: peer.Key(netip.MustParsePrefix("fd10:2::/48")), Value: newRecord(t, "bravo", "fd10:2::/48").Encode()}
	there := peer.Lost{Key: peer.Key(netip.MustParsePrefix("fd10:3::/48")), Value: []byte("the record it was")}
	if _, err := kv.Create(ctx, there.Key, []byte("a newer value")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := k.repair(ctx, peer.Repair{WriteBack: []peer.Lost{lost, there}}); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := kv.Get(ctx, lost.Key); err != nil || string(e.Value()) != string(lost.Value) {
		t.Errorf("lost record: %v, %v; want it written back", e, err)
	}
	if e, err := kv.Get(ctx, there.Key); err != nil || string(e.Value()) != "a newer value" {
		t.Errorf("a key with a value: %v, %v; want it left as it was", e, err)
	}
	if len(*actions) != 1 {
		t.Errorf("actions %q, want one write_back", *actions)
	}
}

// newKeeper is a keeper for host alpha on a fresh bucket, and the repair
// actions it reports.
func newKeeper(t *testing.T) (*Keeper, jetstream.KeyValue, *[]string) {
	t.Helper()
	s := natstest.Start(t)
	nc, js := natstest.Connect(t, s.URL())
	kv, err := OpenBucket(context.Background(), js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	k := &Keeper{Mesh: &Mesh{Conn: &Conn{NC: nc, JS: js, nats: config.NATS{Bucket: "ikto-test"}}, kv: kv}, Self: newRecord(t, "alpha", "fd10:1::/48"),
		Log: slog.New(slog.DiscardHandler), Done: func(a string) { actions = append(actions, a) }}
	return k, kv, &actions
}

// A stream that refused a write as ErrStoreFailed twice is deleted and made
// again (nats-server 2.9 can leave one without its files); one made since by
// another host is left alone.
func TestKeeperMendsABrokenStream(t *testing.T) {
	k, kv, actions := newKeeper(t)
	ctx := context.Background()
	if _, err := kv.Put(ctx, "peers.x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	failed := &jetstream.APIError{Code: 503, ErrorCode: jsErrStreamStoreFailed, Description: "error opening msg block file"}
	refused := k.Mesh.Explain(fmt.Errorf("write back: %w", failed))
	if !errors.Is(refused, ErrStoreFailed) {
		t.Fatalf("Explain(err_code 10077) = %v, want ErrStoreFailed", refused)
	}
	before, err := k.Mesh.created(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k.noteStoreFailure(ctx, refused)
	if !k.broken.IsZero() {
		t.Fatal("one refusal made the stream count as broken")
	}
	k.noteStoreFailure(ctx, refused)
	if !k.broken.Equal(before) {
		t.Fatalf("two refusals: broken = %v, want the stream made at %v", k.broken, before)
	}
	if err := k.repair(ctx, peer.Repair{}); err != nil {
		t.Fatal(err)
	}
	after, err := k.Mesh.created(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !after.After(before) || !k.broken.IsZero() {
		t.Fatalf("after the repair: stream made at %v (was %v), broken %v; want a new stream", after, before, k.broken)
	}
	if _, err := kv.Get(ctx, "peers.x"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the broken stream's values are still there: %v", err)
	}
	if _, err := kv.Get(ctx, k.key()); err != nil {
		t.Errorf("this host's record was not written to the new stream: %v", err)
	}
	// A stream made since (by another host) is not the broken one.
	k.broken = before
	if err := k.repair(ctx, peer.Repair{}); err != nil {
		t.Fatal(err)
	}
	if again, _ := k.Mesh.created(ctx); !again.Equal(after) {
		t.Errorf("a stream made after the broken one was deleted too (made at %v, was %v)", again, after)
	}
	t.Logf("actions: %v", *actions)
}
