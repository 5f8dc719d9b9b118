package userspace

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/devicetest"
)

// dropBind parses endpoints like the real bind but opens no sockets and
// drops every packet, so unit tests never send handshakes anywhere.
type dropBind struct{ conn.Bind }

func (dropBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) { return nil, port, nil }
func (dropBind) Close() error                                         { return nil }
func (dropBind) Send([][]byte, conn.Endpoint) error                   { return nil }
func (dropBind) SetMark(uint32) error                                 { return nil }
func (dropBind) BatchSize() int                                       { return 1 }

// newTestDevice is a real wireguard-go device on a channel TUN and a bind
// that drops packets, so no privileges, interfaces or sockets are needed:
// ConfigurePeers and Peers take exactly their production path.
func newTestDevice(t *testing.T, priv wgtypes.Key) *Device {
	t.Helper()
	bind := dropBind{conn.NewStdNetBind()}
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), bind, newLogger(slog.Default(), "wgtest0", nil))
	d := newDevice(wgdev.Config{Name: "wgtest0", PrivateKey: priv}, dev, slog.Default())
	if err := dev.IpcSet("private_key=" + fmt.Sprintf("%x", priv[:]) + "\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// peerOpts compares peers as both backends report them: order of peers and
// of allowed IPs is the device's business, IPv4 may come in 4- or 16-byte
// form, and the fake does not report a protocol version.
var peerOpts = cmp.Options{
	cmpopts.SortSlices(func(a, b wgtypes.Peer) bool { return string(a.PublicKey[:]) < string(b.PublicKey[:]) }),
	cmp.Transformer("ipnets", func(ns []net.IPNet) []string {
		out := make([]string, 0, len(ns))
		for _, n := range ns {
			out = append(out, n.String())
		}
		slices.Sort(out)
		return out
	}),
	cmp.Comparer(func(a, b *net.UDPAddr) bool { return a.String() == b.String() }),
	cmpopts.IgnoreFields(wgtypes.Peer{}, "ProtocolVersion", "TransmitBytes", "ReceiveBytes", "LastHandshakeTime"),
}

// TestMatchesFake drives a real wireguard-go device and the fake with the same
// random deltas over a small universe of keys and prefixes (so peers collide,
// prefixes move between peers, update-only hits missing peers, and the
// device's own key shows up) and requires identical peers after every call.
// It proves both the UAPI encoding and the fake's kernel semantics.
func TestMatchesFake(t *testing.T) {
	priv := wgtest.PrivateKey(t)
	real := newTestDevice(t, priv)
	model := fake.New(wgdev.Config{Name: "wgtest0", PrivateKey: priv})

	keys := []wgtypes.Key{testKey(1), testKey(2), testKey(3), testKey(4), priv.PublicKey()}
	prefixes := []string{"fd10:1::/48", "fd10:2::/48", "fd10:3::/48", "198.18.1.0/24", "fd10:4::1/48", "198.18.2.7/32"}
	endpoints := []string{"198.18.0.1:51820", "[fd00::1]:51820", "198.18.0.2:1"}
	rng := rand.New(rand.NewPCG(1, 2))

	for step := range 300 {
		changes := make([]wgtypes.PeerConfig, 1+rng.IntN(4))
		for i := range changes {
			changes[i] = randomChange(t, rng, keys, prefixes, endpoints)
		}
		if err := real.ConfigurePeers(changes); err != nil {
			t.Fatalf("step %d: real: %v", step, err)
		}
		if err := model.ConfigurePeers(changes); err != nil {
			t.Fatalf("step %d: fake: %v", step, err)
		}
		got, err := real.Peers()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := model.Peers()
		if diff := cmp.Diff(want, got, peerOpts); diff != "" {
			t.Fatalf("step %d after %+v: peers (-fake +wireguard-go):\n%s", step, changes, diff)
		}
	}
}

func randomChange(t *testing.T, rng *rand.Rand, keys []wgtypes.Key, prefixes, endpoints []string) wgtypes.PeerConfig {
	c := wgtypes.PeerConfig{PublicKey: keys[rng.IntN(len(keys))]}
	switch rng.IntN(6) {
	case 0:
		c.Remove = true
		return c
	case 1:
		c.UpdateOnly = true
	}
	if rng.IntN(2) == 0 {
		ep, err := net.ResolveUDPAddr("udp", endpoints[rng.IntN(len(endpoints))])
		if err != nil {
			t.Fatal(err)
		}
		c.Endpoint = ep
	}
	if rng.IntN(3) == 0 {
		ka := time.Duration(rng.IntN(3)*25) * time.Second
		c.PersistentKeepaliveInterval = &ka
	}
	c.ReplaceAllowedIPs = rng.IntN(2) == 0
	for range rng.IntN(3) {
		ip, n, err := net.ParseCIDR(prefixes[rng.IntN(len(prefixes))])
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip // keep host bits: both backends must mask them
		if v4 := ip.To4(); v4 != nil {
			n.IP = v4
		}
		c.AllowedIPs = append(c.AllowedIPs, *n)
	}
	return c
}

// TestTenThousandPeersOneCall configures a fleet-sized peer set in one
// in-process set operation and reads it back.
func TestTenThousandPeersOneCall(t *testing.T) {
	priv := wgtest.PrivateKey(t)
	d := newTestDevice(t, priv)
	const n = 10_000
	changes := make([]wgtypes.PeerConfig, n)
	for i := range changes {
		var k wgtypes.Key
		binary.BigEndian.PutUint32(k[:], uint32(i+1))
		ip := net.ParseIP("fd10::")
		binary.BigEndian.PutUint16(ip[2:], uint16(i))
		changes[i] = wgtypes.PeerConfig{
			PublicKey:         k,
			Endpoint:          &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 1 + i},
			ReplaceAllowedIPs: true,
			AllowedIPs:        []net.IPNet{{IP: ip, Mask: net.CIDRMask(48, 128)}},
		}
	}
	start := time.Now()
	if err := d.ConfigurePeers(changes); err != nil {
		t.Fatal(err)
	}
	t.Logf("configured %d peers in %s", n, time.Since(start))
	peers, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != n {
		t.Fatalf("got %d peers, want %d", len(peers), n)
	}
}

func TestConfigurePeersErrorNamesDevice(t *testing.T) {
	priv := wgtest.PrivateKey(t)
	d := newTestDevice(t, priv)
	// A zero-port endpoint fails in encoding, before the device sees it.
	err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: testKey(1), Endpoint: &net.UDPAddr{IP: net.ParseIP("198.18.0.1")}}})
	if err == nil || !strings.Contains(err.Error(), "wgtest0") {
		t.Errorf("ConfigurePeers = %v, want an error naming wgtest0", err)
	}
}

func TestEmptyConfigureAndClose(t *testing.T) {
	priv := wgtest.PrivateKey(t)
	d := newTestDevice(t, priv)
	if err := d.ConfigurePeers(nil); err != nil {
		t.Errorf("ConfigurePeers(nil) = %v", err)
	}
	if d.PublicKey() != priv.PublicKey() || d.Name() != "wgtest0" || d.Backend() != wgdev.KindUserspace {
		t.Errorf("identity = %s %s %s", d.Name(), d.Backend(), d.PublicKey())
	}
	devicetest.CheckClose(t, d)
}
