// Package devicetest holds the checks of what every wgdev.Device promises,
// for each backend's tests to run against its device.
package devicetest

import (
	"errors"
	"net"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// CheckClose closes d twice, which must succeed both times (Close is
// idempotent), and checks that Peers and ConfigurePeers then fail with
// net.ErrClosed.
func CheckClose(t testing.TB, d wgdev.Device) {
	t.Helper()
	for i := range 2 {
		if err := d.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := d.Peers(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Peers after Close = %v, want net.ErrClosed", err)
	}
	if err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: wgtypes.Key{1}}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ConfigurePeers after Close = %v, want net.ErrClosed", err)
	}
}
