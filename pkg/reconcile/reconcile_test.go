package reconcile

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

func key(b byte) wgtypes.Key { var k wgtypes.Key; k[0] = b; return k }

func spec(b byte, endpoint, prefix string) Spec {
	return Spec{PublicKey: key(b), Endpoint: netip.MustParseAddrPort(endpoint), AllowedIPs: []netip.Prefix{netip.MustParsePrefix(prefix)}}
}

func set(specs ...Spec) map[wgtypes.Key]Spec {
	m := map[wgtypes.Key]Spec{}
	for _, s := range specs {
		m[s.PublicKey] = s
	}
	return m
}

func TestPlanPeers(t *testing.T) {
	a := spec(1, "198.18.0.1:51820", "fd10:1::/48")
	b := spec(2, "198.18.0.2:51820", "fd10:2::/48")
	bMoved := spec(2, "198.18.0.22:51820", "fd10:2::/48")
	bWider := b
	bWider.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("fd10:2::/48"), netip.MustParsePrefix("fd10:9::/48")}
	bKeepalive := b
	bKeepalive.Keepalive = 25 * time.Second
	tests := []struct {
		name            string
		desired, actual map[wgtypes.Key]Spec
		want            Plan
	}{
		{"empty", set(), set(), Plan{}},
		{"unchanged means no change", set(a, b), set(a, b), Plan{}},
		{"add", set(a, b), set(a), Plan{Add: []Spec{b}}},
		{"update endpoint", set(a, bMoved), set(a, b), Plan{Update: []Spec{bMoved}}},
		{"update allowed ips", set(b), set(bWider), Plan{Update: []Spec{b}}},
		{"update keepalive", set(bKeepalive), set(b), Plan{Update: []Spec{bKeepalive}}},
		{"remove", set(a), set(a, b), Plan{Remove: []wgtypes.Key{key(2)}}},
		{"remove all", set(), set(a, b), Plan{Remove: []wgtypes.Key{key(1), key(2)}}},
		{"everything at once", set(bMoved, spec(3, "[fd00::3]:1", "fd10:3::/48")), set(a, b),
			Plan{Add: []Spec{spec(3, "[fd00::3]:1", "fd10:3::/48")}, Update: []Spec{bMoved}, Remove: []wgtypes.Key{key(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PlanPeers(tt.desired, tt.actual)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }),
				cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y })); diff != "" {
				t.Fatalf("PlanPeers (-want +got):\n%s", diff)
			}
		})
	}
}

// An update whose allowed-ips the device already has leaves them alone:
// replacing them would empty the set for a moment.
func TestPeerConfigsOverKeepAllowedIPs(t *testing.T) {
	b := spec(2, "198.18.0.2:51820", "fd10:2::/48")
	bKeepalive := b
	bKeepalive.Keepalive = 25 * time.Second
	bWider := b
	bWider.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("fd10:2::/48"), netip.MustParsePrefix("fd10:9::/48")}
	for _, tt := range []struct {
		name    string
		actual  map[wgtypes.Key]Spec
		update  Spec
		replace bool
	}{
		{"same allowed-ips", set(b), bKeepalive, false},
		{"other allowed-ips", set(b), bWider, true},
		{"device not known", nil, bKeepalive, true},
	} {
		pcs := Plan{Update: []Spec{tt.update}}.PeerConfigsOver(tt.actual)
		if len(pcs) != 1 || pcs[0].ReplaceAllowedIPs != tt.replace || (len(pcs[0].AllowedIPs) > 0) != tt.replace || !pcs[0].UpdateOnly {
			t.Errorf("%s: %+v; want one update, replacing allowed-ips %v", tt.name, pcs, tt.replace)
		}
	}
}

func newFake() *fake.Device {
	k, _ := wgtypes.GeneratePrivateKey()
	return fake.New(wgdev.Config{Name: "wgtest", PrivateKey: k, ListenPort: 51820})
}

func TestReconcilerOneCallPerPassAndNoneWhenEqual(t *testing.T) {
	dev := newFake()
	r := New(dev)
	want := set(spec(1, "198.18.0.1:51820", "fd10:1::/48"), spec(2, "198.18.0.2:51820", "fd10:2::/48"), spec(3, "[fd00::3]:51820", "fd10:3::/48"))
	res, err := r.Apply(want, false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Refresh || len(res.Plan.Add) != 3 || dev.Calls() != 1 {
		t.Fatalf("first pass: refresh=%v plan=%+v calls=%d; want a device read, 3 adds, 1 call", res.Refresh, res.Plan, dev.Calls())
	}
	if got := deviceSpecs(t, dev); !equalSets(got, want) {
		t.Fatalf("device holds %v, want %v", got, want)
	}
	// Same desired set again, with and without a device read: no call.
	for _, refresh := range []bool{false, true} {
		if res, err := r.Apply(want, refresh); err != nil || !res.Plan.Empty() {
			t.Fatalf("refresh=%v: plan %+v err %v, want empty", refresh, res.Plan, err)
		}
	}
	if dev.Calls() != 1 {
		t.Fatalf("calls = %d after no-op passes, want 1", dev.Calls())
	}
}

func TestReconcilerRefreshRepairsDrift(t *testing.T) {
	dev := newFake()
	r := New(dev)
	want := set(spec(1, "198.18.0.1:51820", "fd10:1::/48"), spec(2, "198.18.0.2:51820", "fd10:2::/48"))
	if _, err := r.Apply(want, false); err != nil {
		t.Fatal(err)
	}
	if err := dev.RemovePeerBehindBack(key(1)); err != nil {
		t.Fatal(err)
	}
	foreign := wgtypes.Peer{PublicKey: key(9)}
	dev.SetPeer(foreign)
	// Without a read, the cache hides the drift: that is the point of the cache.
	if res, _ := r.Apply(want, false); !res.Plan.Empty() {
		t.Fatalf("cached pass planned %+v", res.Plan)
	}
	res, err := r.Apply(want, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.Add) != 1 || len(res.Plan.Remove) != 1 || res.Plan.Remove[0] != key(9) {
		t.Fatalf("refresh plan = %+v, want re-add key 1 and remove key 9", res.Plan)
	}
	if got := deviceSpecs(t, dev); !equalSets(got, want) {
		t.Fatalf("device holds %v after repair, want %v", got, want)
	}
}

func TestReconcilerFailedCallIsRetriedFromTheDevice(t *testing.T) {
	dev := newFake()
	r := New(dev)
	want := set(spec(1, "198.18.0.1:51820", "fd10:1::/48"))
	dev.FailNext(errors.New("boom"))
	if _, err := r.Apply(want, false); err == nil {
		t.Fatal("Apply hid the device error")
	}
	res, err := r.Apply(want, false)
	if err != nil || !res.Refresh || len(res.Plan.Add) != 1 {
		t.Fatalf("after failure: res=%+v err=%v; want a device read and the add again", res, err)
	}
}

func deviceSpecs(t *testing.T, d wgdev.Device) map[wgtypes.Key]Spec {
	t.Helper()
	peers, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	return FromDevice(peers)
}

func equalSets(a, b map[wgtypes.Key]Spec) bool {
	return PlanPeers(a, b).Empty()
}

func TestReconcilerSetUnsetSync(t *testing.T) {
	a := spec(1, "198.18.0.1:51820", "fd10:1::/48")
	b := spec(2, "198.18.0.2:51820", "fd10:2::/48")
	bMoved := spec(2, "198.18.0.22:51820", "fd10:2::/48")
	c := spec(3, "[fd00::3]:51820", "fd10:3::/48")
	dev := newFake()
	r := New(dev)
	steps := []struct {
		name      string
		change    func()
		refresh   bool
		wantPlan  Plan
		wantCalls int // device calls so far
		want      map[wgtypes.Key]Spec
	}{
		{"first pass reads the device and adds", func() { r.Set(a); r.Set(b) }, false, Plan{Add: []Spec{a, b}}, 1, set(a, b)},
		{"nothing changed, no call", func() {}, false, Plan{}, 1, set(a, b)},
		{"same spec again, no call", func() { r.Set(b) }, false, Plan{}, 1, set(a, b)},
		{"update and add in one call", func() { r.Set(bMoved); r.Set(c) }, false, Plan{Add: []Spec{c}, Update: []Spec{bMoved}}, 2, set(a, bMoved, c)},
		{"remove", func() { r.Unset(key(1)) }, false, Plan{Remove: []wgtypes.Key{key(1)}}, 3, set(bMoved, c)},
		{"unset of an unknown peer is nothing", func() { r.Unset(key(7)) }, false, Plan{}, 3, set(bMoved, c)},
		{"set then unset before the pass is nothing", func() { r.Set(a); r.Unset(key(1)) }, false, Plan{}, 3, set(bMoved, c)},
		{"refresh with nothing changed", func() {}, true, Plan{}, 3, set(bMoved, c)},
	}
	for _, st := range steps {
		st.change()
		res, err := r.Sync(st.refresh)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if diff := cmp.Diff(st.wantPlan, res.Plan, cmpNetip); diff != "" {
			t.Fatalf("%s: plan (-want +got):\n%s", st.name, diff)
		}
		if dev.Calls() != st.wantCalls {
			t.Fatalf("%s: %d device calls, want %d", st.name, dev.Calls(), st.wantCalls)
		}
		if got := deviceSpecs(t, dev); !equalSets(got, st.want) {
			t.Fatalf("%s: device holds %v, want %v", st.name, got, st.want)
		}
		if r.Len() != len(st.want) {
			t.Fatalf("%s: Len = %d, want %d", st.name, r.Len(), len(st.want))
		}
	}
}

var cmpNetip = cmp.Options{
	cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }),
	cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y }),
}

func TestReconcilerSyncRefreshRepairsPeersNotChanged(t *testing.T) {
	dev := newFake()
	r := New(dev)
	r.Set(spec(1, "198.18.0.1:51820", "fd10:1::/48"))
	r.Set(spec(2, "198.18.0.2:51820", "fd10:2::/48"))
	if _, err := r.Sync(false); err != nil {
		t.Fatal(err)
	}
	if err := dev.RemovePeerBehindBack(key(1)); err != nil {
		t.Fatal(err)
	}
	dev.SetPeer(wgtypes.Peer{PublicKey: key(9)})
	r.Set(spec(3, "198.18.0.3:51820", "fd10:3::/48"))
	res, err := r.Sync(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.Add) != 2 || len(res.Plan.Remove) != 1 || res.Plan.Remove[0] != key(9) || !res.Refresh {
		t.Fatalf("refresh plan = %+v, want re-add 1, add 3, remove 9", res.Plan)
	}
}

func TestReconcilerSyncAfterFailureReadsTheDevice(t *testing.T) {
	dev := newFake()
	r := New(dev)
	r.Set(spec(1, "198.18.0.1:51820", "fd10:1::/48"))
	if _, err := r.Sync(false); err != nil {
		t.Fatal(err)
	}
	dev.FailNext(errors.New("boom"))
	r.Set(spec(2, "198.18.0.2:51820", "fd10:2::/48"))
	if _, err := r.Sync(false); err == nil {
		t.Fatal("Sync hid the device error")
	}
	// Nothing new is Set, yet the failed change is applied: the pass after a
	// failure compares everything.
	res, err := r.Sync(false)
	if err != nil || !res.Refresh || len(res.Plan.Add) != 1 || res.Plan.Add[0].PublicKey != key(2) {
		t.Fatalf("after failure: res=%+v err=%v; want a device read and the add again", res, err)
	}
}

// TestReconcilerSyncMatchesApply drives one reconciler with per-peer changes
// and another with the whole desired set, and checks that their devices
// never differ.
func TestReconcilerSyncMatchesApply(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		rnd := rand.New(rand.NewPCG(seed, 7))
		devSync, devApply := newFake(), newFake()
		rs, ra := New(devSync), New(devApply)
		desired := map[wgtypes.Key]Spec{}
		for step := range 300 {
			for range 1 + rnd.IntN(4) {
				b := byte(1 + rnd.IntN(12))
				if rnd.IntN(3) == 0 {
					rs.Unset(key(b))
					delete(desired, key(b))
					continue
				}
				s := spec(b, fmt.Sprintf("198.18.0.%d:%d", b, 51820+rnd.IntN(2)), fmt.Sprintf("fd10:%x::/48", b))
				rs.Set(s)
				desired[s.PublicKey] = s
			}
			refresh := rnd.IntN(10) == 0
			if _, err := rs.Sync(refresh); err != nil {
				t.Fatal(err)
			}
			if _, err := ra.Apply(desired, refresh); err != nil {
				t.Fatal(err)
			}
			if got, want := deviceSpecs(t, devSync), deviceSpecs(t, devApply); !equalSets(got, want) {
				t.Fatalf("seed %d step %d: Sync's device %v, Apply's %v", seed, step, got, want)
			}
		}
	}
}

// BenchmarkReconcilerOneChange compares a pass for one new peer on a device
// of n: Sync plans that peer; Apply diffs the whole desired set.
func BenchmarkReconcilerOneChange(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		desired := map[wgtypes.Key]Spec{}
		for i := range n {
			var k wgtypes.Key
			k[0], k[1], k[2] = byte(i), byte(i>>8), 1
			desired[k] = Spec{PublicKey: k, Endpoint: netip.MustParseAddrPort("198.18.0.1:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd10:1::/48")}}
		}
		extra := spec(0xff, "198.18.0.9:51820", "fd10:ff::/48")
		b.Run(fmt.Sprintf("Sync/%d", n), func(b *testing.B) {
			r := New(newFake())
			for _, s := range desired {
				r.Set(s)
			}
			if _, err := r.Sync(false); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				r.Set(extra)
				if _, err := r.Sync(false); err != nil {
					b.Fatal(err)
				}
				r.Unset(extra.PublicKey)
				if _, err := r.Sync(false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Apply/%d", n), func(b *testing.B) {
			r := New(newFake())
			with := maps.Clone(desired)
			with[extra.PublicKey] = extra
			if _, err := r.Apply(desired, false); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := r.Apply(with, false); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Apply(desired, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Put changes the peers it is given that the device has, as given, in one
// call; it adds none (before the first pass nothing may be added) and leaves
// every other peer (a stray one included) and the desired set alone.
func TestReconcilerPutTouchesOnlyItsPeers(t *testing.T) {
	dev := newFake()
	a, b := spec(1, "198.18.0.1:51820", "fd10:1::/48"), spec(2, "198.18.0.2:51820", "fd10:2::/48")
	dev.SetPeer(wgtypes.Peer{PublicKey: key(9)})
	r := New(dev)
	if _, err := r.AddMissing(set(a, b)); err != nil {
		t.Fatal(err)
	}
	aKeepalive := a
	aKeepalive.Keepalive = time.Second
	c := spec(3, "198.18.0.3:51820", "fd10:3::/48")
	calls := dev.Calls()
	if err := r.Put(set(aKeepalive, c)); err != nil {
		t.Fatal(err)
	}
	if dev.Calls() != calls+1 {
		t.Errorf("Put made %d device calls, want 1", dev.Calls()-calls)
	}
	got := deviceSpecs(t, dev)
	if len(got) != 3 || got[key(1)].Keepalive != time.Second || got[key(2)].Keepalive != 0 {
		t.Errorf("device after Put: %v; want a with the new keepalive, b as it was, the stray kept", got)
	}
	if _, ok := got[key(3)]; ok {
		t.Error("Put added a peer the device did not have")
	}
	if _, ok := got[key(9)]; !ok {
		t.Error("Put took a peer it was not given off the device")
	}
	if r.Len() != 0 {
		t.Errorf("desired set of %d after Put, want it unchanged (empty)", r.Len())
	}
}
