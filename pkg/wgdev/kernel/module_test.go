package kernel

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// TestOpenReal runs the real Open where it can: as root it either finds the
// wireguard module (then opens, reopens to adopt, and removes the link) or
// must report ErrNotSupported, which is what the auto backend relies on.
func TestOpenReal(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	name := "iktk" + hex.EncodeToString(suffix[:])
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := wgdev.Config{Name: name, PrivateKey: priv, ListenPort: 0, Address: netip.MustParsePrefix("fd00:1::1/64"), MTU: 1420}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})

	d, err := Open(cfg)
	if errors.Is(err, wgdev.ErrNotSupported) {
		t.Logf("no wireguard module, as expected here: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	d.Close()
	again, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open to adopt: %v", err)
	}
	again.Close()
}
