package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

var selfPrefix = netip.MustParsePrefix("fd10:1::/48")

// rules is the mesh of these tests: records are signed for bucket
// "ikto-test".
var rules = peer.Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48, Bucket: "ikto-test"}

// world is a controller on a fake device, for the host fd10:1::/48.
type world struct {
	priv wgtypes.Key
	key  wgtypes.Key
	dev  *fake.Device
	ctl  *Controller
}

func newWorld(t *testing.T) *world {
	t.Helper()
	priv := wgtest.PrivateKey(t)
	w := &world{priv: priv, key: priv.PublicKey(), dev: fake.New(wgdev.Config{Name: "wgtest"})}
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, w.dev, Options{KeepView: true})
	return w
}

// snapshot loads entries as a bucket's snapshot (the first one, or a
// re-created bucket's) and runs a pass.
func (w *world) snapshot(entries ...peer.Write) Outcome {
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: entries})
	return w.ctl.Pass(false)
}

// update loads entries as updates that follow the snapshot and runs a pass.
func (w *world) update(entries ...peer.Write) Outcome {
	w.ctl.Load(peer.Batch{Entries: entries})
	return w.ctl.Pass(false)
}

// selfEntry is this host's record, written at rev, signed with seq rev.
func (w *world) selfEntry(rev uint64) peer.Write {
	return signedEntry(w.priv, "self", selfPrefix, rev)
}

func signedEntry(priv wgtypes.Key, name string, p netip.Prefix, rev uint64) peer.Write {
	r := peer.Record{Name: name, PublicKey: priv.PublicKey().String(), AdvertiseAddress: "198.18.0.20", AllowedIP: p.String(), WGPort: 51820, Seq: rev}
	if err := rules.SignRecord(&r, priv); err != nil {
		panic(err)
	}
	return peer.Write{Key: peer.Key(p), Value: r.Encode(), Revision: rev}
}

// hostEntry is the signed record of another host, holding fd10:<n>::/48,
// written at rev (and signed with seq rev).
func hostEntry(t *testing.T, n int, rev uint64) (peer.Write, wgtypes.Key) {
	t.Helper()
	priv := wgtest.PrivateKey(t)
	p := netip.MustParsePrefix(fmt.Sprintf("fd10:%x::/48", n))
	return signedEntry(priv, p.String(), p, rev), priv.PublicKey()
}

// putOnDevice puts a peer on the device behind the controller's back, as an
// agent before (or an operator) left it.
func (w *world) putOnDevice(t *testing.T, k wgtypes.Key, prefix string) {
	t.Helper()
	p := wgtypes.PeerConfig{PublicKey: k, AllowedIPs: []net.IPNet{wgtest.IPNet(t, prefix)}}
	if err := w.dev.ConfigurePeers([]wgtypes.PeerConfig{p}); err != nil {
		t.Fatal(err)
	}
}

// accepted is the entries as a snapshot's accepted records, for Restore.
func accepted(t *testing.T, entries ...peer.Write) map[wgtypes.Key]peer.Accepted {
	t.Helper()
	out := map[wgtypes.Key]peer.Accepted{}
	for _, e := range entries {
		acc, rej := rules.Check(e.Key, e.Value, e.Revision)
		if rej != nil {
			t.Fatal(rej)
		}
		out[acc.PublicKey] = acc
	}
	return out
}

func devicePrefixes(t *testing.T, d wgdev.Device) []string {
	t.Helper()
	peers, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range peers {
		for _, n := range p.AllowedIPs {
			out = append(out, n.String())
		}
	}
	return out
}

// A burst of watch batches queued behind a snapshot costs one device call.
func TestBurstIsOneDeviceCall(t *testing.T) {
	w := newWorld(t)
	batches := make(chan peer.Batch, 64)
	batches <- peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(1)}}
	for i := range 40 {
		e, _ := hostEntry(t, 0x100+i, uint64(2+i))
		batches <- peer.Batch{Entries: []peer.Write{e}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outcomes := make(chan Outcome, 4)
	done := make(chan error, 1)
	go func() {
		done <- w.ctl.Run(ctx, Inputs{Batches: batches, Resync: time.Hour, Publish: func(o Outcome) { outcomes <- o }})
	}()
	o := <-outcomes
	if got := len(devicePrefixes(t, w.dev)); got != 40 || o.Peers != 40 || o.Configured != 40 || o.Events != 40 || o.Snapshots != 1 {
		t.Fatalf("after the burst: %d peers on the device, outcome %+v", got, o)
	}
	if w.dev.Calls() != 1 {
		t.Fatalf("41 queued batches took %d device calls, want 1", w.dev.Calls())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Outcomes are immutable: a later pass never changes what an earlier one
// reported, so a reader on another goroutine sees one consistent pass.
func TestOutcomeIsNotChangedByLaterPasses(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	first := w.snapshot(w.selfEntry(1), a)
	if first.View == nil || len(first.View.Peers) != 1 {
		t.Fatalf("first pass view = %+v, want one peer", first.View)
	}
	b, _ := hostEntry(t, 3, 3)
	second := w.update(b, peer.Write{Key: a.Key, Revision: 4, Deleted: true})
	if len(first.View.Peers) != 1 || len(second.View.Peers) != 1 || first.Seq >= second.Seq {
		t.Fatalf("views after the second pass: first %d peers (seq %d), second %d (seq %d)",
			len(first.View.Peers), first.Seq, len(second.View.Peers), second.Seq)
	}
	if d := cmp.Diff([]string{"fd10:3::/48"}, devicePrefixes(t, w.dev)); d != "" {
		t.Errorf("device after the second pass (-want +got):\n%s", d)
	}
}

// Restore only adds: a peer the device already has keeps its configuration,
// and one the snapshot lacks stays until the bucket's first pass. The
// device's sessions went with the agent before (an embedded device made
// again): a peer put back keeps sending into its old session until its own
// timers give up, so this end starts the handshake — the peer gets the
// contact keepalive, which sends at once. A peer the device still has a
// session with (a kernel device that outlived the agent) is left as it is.
func TestRestoreOnlyAdds(t *testing.T) {
	w := newWorld(t)
	kept, keptKey := hostEntry(t, 2, 2)
	live, liveKey := hostEntry(t, 3, 3)
	_, strayKey := hostEntry(t, 9, 9)
	w.putOnDevice(t, strayKey, "fd10:9::/48")
	w.putOnDevice(t, liveKey, "fd10:3::/48")
	handshake(t, w, liveKey, time.Now())
	o := w.ctl.Restore(accepted(t, kept, live))
	if o.State != StateRestored || o.DeviceErr != nil || len(o.Plan.Add) != 1 || len(o.Plan.Remove) != 0 || o.Plan.Add[0].PublicKey != keptKey {
		t.Fatalf("restore outcome %+v", o)
	}
	if d := cmp.Diff([]string{"fd10:2::/48", "fd10:3::/48", "fd10:9::/48"}, sorted(devicePrefixes(t, w.dev))); d != "" {
		t.Errorf("device after restore (-want +got):\n%s", d)
	}
	if ct := w.ctl.contacts[keptKey]; ct == nil || !ct.starts || len(o.Contacts) != 1 {
		t.Errorf("a peer restored onto a device without its session: contact %+v, contacts %v; want this end to start, and no other contact", ct, o.Contacts)
	}
	if p, _ := devicePeer(t, w, keptKey); p.PersistentKeepaliveInterval != contactKeepalive || p.Endpoint == nil {
		t.Errorf("the restored peer: keepalive %s, endpoint %v; want %s (sent at once) and the endpoint", p.PersistentKeepaliveInterval, p.Endpoint, contactKeepalive)
	}
	// The bucket's first pass has the last word: the stray peer goes.
	if o := w.snapshot(w.selfEntry(1), kept, live); o.DeviceErr != nil || len(o.Plan.Remove) != 1 || o.Plan.Remove[0] != strayKey {
		t.Fatalf("first pass after restore: %+v", o)
	}
}

// An eviction stands down: every peer goes, and the outcome carries the
// error that ends the agent.
func TestEvictionStandsDown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(w *world) peer.Write
	}{
		{"deleted", func(w *world) peer.Write {
			return peer.Write{Key: peer.Key(selfPrefix), Revision: 5, Deleted: true}
		}},
		{"revoked", func(w *world) peer.Write {
			return peer.Write{Key: peer.RevokedKey(w.key), Value: []byte("{}"), Revision: 5}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			a, _ := hostEntry(t, 2, 2)
			if o := w.snapshot(w.selfEntry(1), a); o.Err() != nil || o.Claim != ClaimHeld || len(devicePrefixes(t, w.dev)) != 1 {
				t.Fatalf("first pass: %+v", o)
			}
			o := w.update(tc.change(w))
			if !errors.Is(o.Err(), ErrEvicted) || o.State != StateStandingDown || o.Claim != ClaimEvicted || len(o.View.Peers) != 0 {
				t.Fatalf("outcome after %s: state %s, claim %s, err %v, view %+v", tc.name, o.State, o.Claim, o.Err(), o.View)
			}
			if got := devicePrefixes(t, w.dev); len(got) != 0 {
				t.Errorf("device still has %v", got)
			}
		})
	}
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
