package userspace

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
)

// testKey returns a key whose every byte is b, which keeps the expected UAPI
// text readable.
func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func hexKey(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), 32) }

func durp(d time.Duration) *time.Duration { return &d }

func TestWritePeerConfigs(t *testing.T) {
	psk := testKey(0xee)
	tests := []struct {
		name    string
		changes []wgtypes.PeerConfig
		want    string
	}{
		{
			name:    "remove ignores everything else",
			changes: []wgtypes.PeerConfig{{PublicKey: testKey(1), Remove: true, UpdateOnly: true, AllowedIPs: []net.IPNet{wgtest.IPNet(t, "fd10::/48")}}},
			want:    "public_key=" + hexKey(1) + "\nremove=true\n",
		},
		{
			name: "full peer",
			changes: []wgtypes.PeerConfig{{
				PublicKey:                   testKey(2),
				UpdateOnly:                  true,
				PresharedKey:                &psk,
				Endpoint:                    &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 51820},
				PersistentKeepaliveInterval: durp(25 * time.Second),
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  []net.IPNet{wgtest.IPNet(t, "fd10:1::/48"), wgtest.IPNet(t, "198.18.4.0/24")},
			}},
			want: "public_key=" + hexKey(2) + "\n" +
				"update_only=true\n" +
				"preshared_key=" + hexKey(0xee) + "\n" +
				"endpoint=198.18.0.1:51820\n" +
				"persistent_keepalive_interval=25\n" +
				"replace_allowed_ips=true\n" +
				"allowed_ip=fd10:1::/48\n" +
				"allowed_ip=198.18.4.0/24\n",
		},
		{
			name: "ipv6 endpoint is bracketed, keepalive zero is written",
			changes: []wgtypes.PeerConfig{{
				PublicKey:                   testKey(3),
				Endpoint:                    &net.UDPAddr{IP: net.ParseIP("fd00::1"), Port: 51820},
				PersistentKeepaliveInterval: durp(0),
			}},
			want: "public_key=" + hexKey(3) + "\n" +
				"endpoint=[fd00::1]:51820\n" +
				"persistent_keepalive_interval=0\n",
		},
		{
			name:    "several peers in order",
			changes: []wgtypes.PeerConfig{{PublicKey: testKey(4)}, {PublicKey: testKey(5), Remove: true}},
			want:    "public_key=" + hexKey(4) + "\npublic_key=" + hexKey(5) + "\nremove=true\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writePeerConfigs(&buf, tt.changes); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, buf.String()); diff != "" {
				t.Errorf("uapi text (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWritePeerConfigsRejects(t *testing.T) {
	tests := []struct {
		name   string
		change wgtypes.PeerConfig
	}{
		{"endpoint without ip", wgtypes.PeerConfig{Endpoint: &net.UDPAddr{Port: 1}}},
		{"endpoint port zero", wgtypes.PeerConfig{Endpoint: &net.UDPAddr{IP: net.ParseIP("198.18.0.1")}}},
		{"keepalive too long", wgtypes.PeerConfig{PersistentKeepaliveInterval: durp(70000 * time.Second)}},
		{"allowed ip without mask", wgtypes.PeerConfig{AllowedIPs: []net.IPNet{{IP: net.ParseIP("fd00::1")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writePeerConfigs(&buf, []wgtypes.PeerConfig{tt.change}); err == nil {
				t.Errorf("writePeerConfigs succeeded, wrote %q", buf.String())
			}
		})
	}
}

func TestParsePeers(t *testing.T) {
	// The shape of wireguard-go's IpcGetOperation output.
	in := "private_key=" + hexKey(9) + "\n" +
		"listen_port=51820\n" +
		"public_key=" + hexKey(1) + "\n" +
		"preshared_key=" + hexKey(0) + "\n" +
		"protocol_version=1\n" +
		"endpoint=[fd00::2]:51821\n" +
		"last_handshake_time_sec=1795000000\n" +
		"last_handshake_time_nsec=500\n" +
		"tx_bytes=100\n" +
		"rx_bytes=200\n" +
		"persistent_keepalive_interval=25\n" +
		"allowed_ip=fd10:1::/48\n" +
		"allowed_ip=198.18.4.0/24\n" +
		"some_future_key=whatever\n" +
		"public_key=" + hexKey(2) + "\n" +
		"last_handshake_time_sec=0\n" +
		"last_handshake_time_nsec=0\n" +
		"errno=0\n" +
		"\n"
	want := []wgtypes.Peer{
		{
			PublicKey:                   testKey(1),
			ProtocolVersion:             1,
			Endpoint:                    &net.UDPAddr{IP: net.ParseIP("fd00::2"), Port: 51821},
			LastHandshakeTime:           time.Unix(1795000000, 500),
			TransmitBytes:               100,
			ReceiveBytes:                200,
			PersistentKeepaliveInterval: 25 * time.Second,
			AllowedIPs:                  []net.IPNet{wgtest.IPNet(t, "fd10:1::/48"), wgtest.IPNet(t, "198.18.4.0/24")},
		},
		{PublicKey: testKey(2)},
	}
	got, err := parsePeers(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
}

func TestParsePeersErrors(t *testing.T) {
	for _, in := range []string{
		"public_key=zz\n",
		"public_key=" + hexKey(1)[:10] + "\n",
		"public_key=" + hexKey(1) + "\nrx_bytes=lots\n",
		"public_key=" + hexKey(1) + "\nendpoint=nowhere\n",
		"public_key=" + hexKey(1) + "\nallowed_ip=fd10::\n",
		"no equals sign\n",
		"errno=-22\n\n",
	} {
		if _, err := parsePeers(strings.NewReader(in)); err == nil {
			t.Errorf("parsePeers(%q) succeeded", in)
		}
	}
}
