package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

func TestMain(m *testing.M) {
	// The propagation tests run the nats-server in a copy of this binary.
	if handled, err := RunChild(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFleetRecordsAreAccepted checks that synthetic hosts are hosts an agent
// applies: every record passes the acceptance rules, and no two share a
// prefix, an endpoint or a key.
func TestFleetRecordsAreAccepted(t *testing.T) {
	tests := []struct {
		mesh string
		bits int
	}{
		{"fd10::/16", 48},
		{"fd42:1234::/32", 56},
	}
	for _, tt := range tests {
		t.Run(tt.mesh, func(t *testing.T) {
			mesh := netip.MustParsePrefix(tt.mesh)
			f, err := NewFleet(mesh, tt.bits)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := f.Records(300)
			if err != nil {
				t.Fatal(err)
			}
			rules := peer.Rules{Mesh: mesh, Bits: tt.bits}
			seen := map[string]bool{}
			for i, r := range recs {
				p := netip.MustParsePrefix(r.AllowedIP)
				if _, rej := rules.Check(peer.Key(p), r.Encode(), uint64(i+1)); rej != nil {
					t.Fatalf("record %d rejected: %v", i, rej)
				}
				for _, v := range []string{r.AllowedIP, r.AdvertiseAddress, r.PublicKey} {
					if seen[v] {
						t.Fatalf("record %d repeats %s", i, v)
					}
					seen[v] = true
				}
				if !underlay.Contains(netip.MustParseAddr(r.AdvertiseAddress)) {
					t.Fatalf("record %d advertises %s, outside %s", i, r.AdvertiseAddress, underlay)
				}
			}
		})
	}
	if _, err := NewFleet(netip.MustParsePrefix("fd10::/40"), 48); err == nil {
		t.Error("NewFleet accepted a mesh with room for 256 hosts")
	}
}

func TestFleetAgentConfigValidates(t *testing.T) {
	f, err := NewFleet(benchMesh, config.DefaultSubnetPrefix)
	if err != nil {
		t.Fatal(err)
	}
	idx := f.Next()
	c, err := f.AgentConfig(t.TempDir(), idx, "nats://127.0.0.1:4222", "b", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix != f.Prefix(idx) {
		t.Fatalf("config claims %s, want %s", s.Prefix, f.Prefix(idx))
	}
}

func TestProbe(t *testing.T) {
	p := newProbe(3)
	p.arm()
	p.seen(1)
	p.seen(1) // a second report of one observer does not count
	if err := p.wait(context.Background(), 10*time.Millisecond); err == nil {
		t.Fatal("wait returned with two observers missing")
	}
	p.seen(0)
	p.seen(2)
	if err := p.wait(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	for i, d := range p.latencies() {
		if d < 0 {
			t.Errorf("observer %d: latency %v", i, d)
		}
	}
	if err := newProbe(0).wait(context.Background(), time.Millisecond); err != nil {
		t.Errorf("a probe of nobody: %v", err)
	}
}

// TestProbedDeviceReportsTheAwaitedChangeOnly drives the in-memory device
// through the wrapper and checks that only a successful call that carries
// the awaited change counts.
func TestProbedDeviceReportsTheAwaitedChangeOnly(t *testing.T) {
	mustKey := func() wgtypes.Key {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	var target atomic.Pointer[peerChange]
	d := &probedDevice{Device: fake.New(wgdev.Config{Name: "wgt", PrivateKey: mustKey()}), index: 0, target: &target}
	want, other := mustKey().PublicKey(), mustKey().PublicKey()
	p := newProbe(1)
	p.arm()
	target.Store(&peerChange{key: want, probe: p})
	steps := []struct {
		name    string
		changes []wgtypes.PeerConfig
		fail    bool
		done    bool
	}{
		{"another peer", []wgtypes.PeerConfig{{PublicKey: other}}, false, false},
		{"the removal of the awaited peer", []wgtypes.PeerConfig{{PublicKey: want, Remove: true}}, false, false},
		{"a failed call", []wgtypes.PeerConfig{{PublicKey: want}}, true, false},
		{"the change", []wgtypes.PeerConfig{{PublicKey: other}, {PublicKey: want}}, false, true},
	}
	for _, st := range steps {
		if st.fail {
			d.FailNext(errors.New("boom"))
		}
		err := d.ConfigurePeers(st.changes)
		if (err != nil) != st.fail {
			t.Fatalf("%s: err = %v", st.name, err)
		}
		if got := p.left.Load() == 0; got != st.done {
			t.Fatalf("%s: done = %v, want %v", st.name, got, st.done)
		}
	}
}
