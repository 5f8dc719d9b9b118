package reconcile

import (
	"errors"
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
