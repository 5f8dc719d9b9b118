package fake

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/devicetest"
)

// key returns a deterministic public key whose first byte is b, so sorted
// order in the tables is the order of b.
func key(b byte) wgtypes.Key {
	var k wgtypes.Key
	k[0] = b
	k[31] = 0x40
	return k
}

func ipnets(t testing.TB, ss ...string) []net.IPNet {
	out := make([]net.IPNet, 0, len(ss))
	for _, s := range ss {
		out = append(out, wgtest.IPNet(t, s))
	}
	return out
}

func udp(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func dur(d time.Duration) *time.Duration { return &d }

func TestConfigurePeersDeltas(t *testing.T) {
	priv := wgtest.PrivateKey(t)
	self := priv.PublicKey()
	a, b := key(1), key(2)
	peerA := func() wgtypes.Peer {
		return wgtypes.Peer{
			PublicKey:                   a,
			Endpoint:                    udp("198.18.0.1:51820"),
			PersistentKeepaliveInterval: 25 * time.Second,
			AllowedIPs:                  ipnets(t, "fd10:1::/48"),
		}
	}

	tests := []struct {
		name    string
		initial []wgtypes.Peer
		changes []wgtypes.PeerConfig
		want    []wgtypes.Peer
	}{
		{
			name: "add",
			changes: []wgtypes.PeerConfig{{
				PublicKey:                   a,
				Endpoint:                    udp("198.18.0.1:51820"),
				PersistentKeepaliveInterval: dur(25 * time.Second),
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  ipnets(t, "fd10:1::/48"),
			}},
			want: []wgtypes.Peer{peerA()},
		},
		{
			name:    "update only skips a missing peer",
			changes: []wgtypes.PeerConfig{{PublicKey: b, UpdateOnly: true, Endpoint: udp("198.18.0.2:1")}},
			initial: []wgtypes.Peer{peerA()},
			want:    []wgtypes.Peer{peerA()},
		},
		{
			name:    "update only changes an existing peer and leaves unset fields",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: a, UpdateOnly: true, Endpoint: udp("198.18.0.9:51821")}},
			want: []wgtypes.Peer{func() wgtypes.Peer {
				p := peerA()
				p.Endpoint = udp("198.18.0.9:51821")
				return p
			}()},
		},
		{
			name:    "keepalive zero turns it off",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: a, PersistentKeepaliveInterval: dur(0)}},
			want: []wgtypes.Peer{func() wgtypes.Peer {
				p := peerA()
				p.PersistentKeepaliveInterval = 0
				return p
			}()},
		},
		{
			name:    "remove",
			initial: []wgtypes.Peer{peerA(), {PublicKey: b}},
			changes: []wgtypes.PeerConfig{{PublicKey: a, Remove: true, Endpoint: udp("198.18.0.3:1")}},
			want:    []wgtypes.Peer{{PublicKey: b}},
		},
		{
			name:    "remove a missing peer is a no-op",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: b, Remove: true}},
			want:    []wgtypes.Peer{peerA()},
		},
		{
			name:    "allowed ips without replace are added",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: a, AllowedIPs: ipnets(t, "fd10:2::/48", "fd10:1::/48")}},
			want: []wgtypes.Peer{func() wgtypes.Peer {
				p := peerA()
				p.AllowedIPs = ipnets(t, "fd10:1::/48", "fd10:2::/48")
				return p
			}()},
		},
		{
			name:    "replace allowed ips",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: a, ReplaceAllowedIPs: true, AllowedIPs: ipnets(t, "fd10:3::/48")}},
			want: []wgtypes.Peer{func() wgtypes.Peer {
				p := peerA()
				p.AllowedIPs = ipnets(t, "fd10:3::/48")
				return p
			}()},
		},
		{
			name:    "replace with no allowed ips clears them",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: a, ReplaceAllowedIPs: true}},
			want: []wgtypes.Peer{func() wgtypes.Peer {
				p := peerA()
				p.AllowedIPs = nil
				return p
			}()},
		},
		{
			name:    "an allowed ip moves to the peer that claims it last",
			initial: []wgtypes.Peer{peerA()},
			changes: []wgtypes.PeerConfig{{PublicKey: b, AllowedIPs: ipnets(t, "fd10:1::/48")}},
			want: []wgtypes.Peer{
				func() wgtypes.Peer {
					p := peerA()
					p.AllowedIPs = []net.IPNet{}
					return p
				}(),
				{PublicKey: b, AllowedIPs: ipnets(t, "fd10:1::/48")},
			},
		},
		{
			name:    "host bits are masked off",
			changes: []wgtypes.PeerConfig{{PublicKey: a, AllowedIPs: []net.IPNet{{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 32)}}}},
			want:    []wgtypes.Peer{{PublicKey: a, AllowedIPs: ipnets(t, "10.1.2.0/24")}},
		},
		{
			name:    "the device's own key is ignored",
			changes: []wgtypes.PeerConfig{{PublicKey: self, AllowedIPs: ipnets(t, "fd10:9::/48")}},
			want:    []wgtypes.Peer{},
		},
		{
			name: "changes apply in order",
			changes: []wgtypes.PeerConfig{
				{PublicKey: a, Endpoint: udp("198.18.0.1:1")},
				{PublicKey: a, Remove: true},
				{PublicKey: b, Endpoint: udp("198.18.0.2:2")},
			},
			want: []wgtypes.Peer{{PublicKey: b, Endpoint: udp("198.18.0.2:2")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(wgdev.Config{Name: "wg-test", PrivateKey: priv})
			d.SetPeers(tt.initial)
			if err := d.ConfigurePeers(tt.changes); err != nil {
				t.Fatalf("ConfigurePeers: %v", err)
			}
			got, err := d.Peers()
			if err != nil {
				t.Fatalf("Peers: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(equalIPNets)); diff != "" {
				t.Errorf("peers (-want +got):\n%s", diff)
			}
			if got, want := d.Calls(), 1; got != want {
				t.Errorf("Calls() = %d, want %d", got, want)
			}
		})
	}
}

// equalIPNets treats nil and empty allowed-ip lists alike: the kernel does not
// distinguish them.
func equalIPNets(a, b []net.IPNet) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

func TestEmptyChangeIsNotACall(t *testing.T) {
	d := New(wgdev.Config{Name: "wg-test"})
	d.FailNext(errors.New("boom"))
	for _, changes := range [][]wgtypes.PeerConfig{nil, {}} {
		if err := d.ConfigurePeers(changes); err != nil {
			t.Fatalf("ConfigurePeers(%v) = %v, want nil", changes, err)
		}
	}
	if got := d.Calls(); got != 0 {
		t.Errorf("Calls() = %d, want 0", got)
	}
}

func TestFailNext(t *testing.T) {
	boom := errors.New("boom")
	d := New(wgdev.Config{Name: "wg-test"})
	d.FailNext(boom)
	add := []wgtypes.PeerConfig{{PublicKey: key(1)}}

	err := d.ConfigurePeers(add)
	if !errors.Is(err, boom) {
		t.Fatalf("first ConfigurePeers = %v, want %v", err, boom)
	}
	if peers, _ := d.Peers(); len(peers) != 0 {
		t.Errorf("failed call changed the device: %v", peers)
	}
	if err := d.ConfigurePeers(add); err != nil {
		t.Fatalf("second ConfigurePeers = %v, want nil", err)
	}
	if peers, _ := d.Peers(); len(peers) != 1 {
		t.Errorf("got %d peers after retry, want 1", len(peers))
	}
	if got := d.Calls(); got != 2 {
		t.Errorf("Calls() = %d, want 2", got)
	}
}

func TestDrift(t *testing.T) {
	d := New(wgdev.Config{Name: "wg-test"})
	if err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: key(1)}, {PublicKey: key(2)}}); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePeerBehindBack(key(1)); err != nil {
		t.Fatalf("RemovePeerBehindBack: %v", err)
	}
	if err := d.RemovePeerBehindBack(key(1)); err == nil {
		t.Error("RemovePeerBehindBack of a missing peer succeeded")
	}
	hs := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	d.SetPeer(wgtypes.Peer{PublicKey: key(2), LastHandshakeTime: hs, ReceiveBytes: 10, TransmitBytes: 20})

	got, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	want := []wgtypes.Peer{{PublicKey: key(2), LastHandshakeTime: hs, ReceiveBytes: 10, TransmitBytes: 20}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	if got := d.Calls(); got != 1 {
		t.Errorf("Calls() = %d, want 1 (drift is not a call)", got)
	}
}

func TestPeersReturnsCopies(t *testing.T) {
	d := New(wgdev.Config{Name: "wg-test"})
	err := d.ConfigurePeers([]wgtypes.PeerConfig{{
		PublicKey:  key(1),
		Endpoint:   udp("198.18.0.1:51820"),
		AllowedIPs: ipnets(t, "fd10:1::/48"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := d.Peers()
	got[0].Endpoint.IP[len(got[0].Endpoint.IP)-1] = 99
	got[0].AllowedIPs[0].IP[0] = 0
	again, _ := d.Peers()
	if s := again[0].Endpoint.String(); s != "198.18.0.1:51820" {
		t.Errorf("endpoint changed through a returned copy: %s", s)
	}
	if s := again[0].AllowedIPs[0].String(); s != "fd10:1::/48" {
		t.Errorf("allowed ip changed through a returned copy: %s", s)
	}
}

func TestClose(t *testing.T) {
	devicetest.CheckClose(t, New(wgdev.Config{Name: "wg-test"}))
}

// TestConcurrentCallers is for -race: many goroutines configure and read.
func TestConcurrentCallers(t *testing.T) {
	d := New(wgdev.Config{Name: "wg-test"})
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Go(func() {
			for i := range 50 {
				k := key(byte(w))
				k[1] = byte(i)
				if err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: k, AllowedIPs: ipnets(t, fmt.Sprintf("fd10:%x:%x::/48", w, i))}}); err != nil {
					t.Error(err)
					return
				}
				if i%10 != 0 {
					continue
				}
				if _, err := d.Peers(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	peers, _ := d.Peers()
	if got, want := len(peers), workers*50; got != want {
		t.Errorf("got %d peers, want %d", got, want)
	}
	if got, want := d.Calls(), workers*50; got != want {
		t.Errorf("Calls() = %d, want %d", got, want)
	}
}
