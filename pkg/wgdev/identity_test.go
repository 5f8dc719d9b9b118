package wgdev

import (
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestIdentity(t *testing.T) {
	k1, k2 := wgtypes.Key{1}, wgtypes.Key{2}
	id := NewIdentity("wg-test", KindKernel, k1)
	if id.Name() != "wg-test" || id.Backend() != KindKernel || id.PublicKey() != k1 {
		t.Fatalf("NewIdentity: %s %s %s", id.Name(), id.Backend(), id.PublicKey())
	}
	id.SetPublicKey(k2)
	if id.PublicKey() != k2 {
		t.Errorf("after SetPublicKey: %s, want %s", id.PublicKey(), k2)
	}
}
