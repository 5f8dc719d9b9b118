package kernel

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

// TestOpenReal runs the real Open where it can: as root it either finds the
// wireguard module (then opens, reopens to adopt, and removes the link) or
// must report ErrNotSupported, which is what the auto backend relies on. In
// the kernel lane (IKTO_TEST_WG_BACKEND=kernel) the module must be there.
func TestOpenReal(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	name := "iktk" + netnstest.Suffix(t)
	priv := wgtest.PrivateKey(t)
	cfg := wgdev.Config{Name: name, PrivateKey: priv, ListenPort: 0, Address: netip.MustParsePrefix("fd00:1::1/64"), MTU: 1420}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})

	d, err := Open(cfg)
	if errors.Is(err, wgdev.ErrNotSupported) {
		if os.Getenv("IKTO_TEST_WG_BACKEND") == "kernel" {
			t.Fatalf("IKTO_TEST_WG_BACKEND=kernel but: %v", err)
		}
		t.Logf("no wireguard module, as expected here: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	peer := wgtypes.PeerConfig{PublicKey: priv.PublicKey(), AllowedIPs: nil}
	other := wgtest.PrivateKey(t)
	peer.PublicKey = other.PublicKey()
	if err := d.ConfigurePeers([]wgtypes.PeerConfig{peer}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// Closed, the link stays with its peer: an agent restart cuts nothing.
	again, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open to adopt: %v", err)
	}
	defer again.Close()
	if again.Backend() != wgdev.KindKernel {
		t.Errorf("Backend() = %q", again.Backend())
	}
	peers, err := again.Peers()
	if err != nil || len(peers) != 1 || peers[0].PublicKey != peer.PublicKey {
		t.Errorf("peers after adopting = %v, %v; want the one added before", peers, err)
	}
}
