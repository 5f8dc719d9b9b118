package fake

import (
	"encoding/binary"
	"net"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

func manyPeers(n int) []wgtypes.PeerConfig {
	out := make([]wgtypes.PeerConfig, n)
	for i := range out {
		var k wgtypes.Key
		binary.BigEndian.PutUint32(k[:], uint32(i))
		ip := net.ParseIP("fd10::")
		binary.BigEndian.PutUint16(ip[2:], uint16(i))
		out[i] = wgtypes.PeerConfig{
			PublicKey:         k,
			Endpoint:          &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 51820},
			ReplaceAllowedIPs: true,
			AllowedIPs:        []net.IPNet{{IP: ip, Mask: net.CIDRMask(48, 128)}},
		}
	}
	return out
}

func BenchmarkConfigure10kPeers(b *testing.B) {
	changes := manyPeers(10_000)
	for b.Loop() {
		d := New(wgdev.Config{Name: "wg-bench"})
		if err := d.ConfigurePeers(changes); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParallelUpdateOne(b *testing.B) {
	d := New(wgdev.Config{Name: "wg-bench"})
	changes := manyPeers(10_000)
	if err := d.ConfigurePeers(changes); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c := changes[i%len(changes)]
			c.UpdateOnly = true
			if err := d.ConfigurePeers([]wgtypes.PeerConfig{c}); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkPeers10k(b *testing.B) {
	d := New(wgdev.Config{Name: "wg-bench"})
	if err := d.ConfigurePeers(manyPeers(10_000)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := d.Peers(); err != nil {
			b.Fatal(err)
		}
	}
}
