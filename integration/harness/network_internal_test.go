package harness

import (
	"net/netip"
	"testing"
)

func TestRandomPrefix(t *testing.T) {
	mesh := netip.MustParsePrefix("fd42::/16")
	for range 1000 {
		p, err := randomPrefix(mesh, 48)
		if err != nil {
			t.Fatal(err)
		}
		if p.Bits() != 48 || p.Masked() != p || !mesh.Contains(p.Addr()) {
			t.Fatalf("randomPrefix(%s, 48) = %s: not an aligned /48 inside", mesh, p)
		}
	}
}

func TestRandomSubnet(t *testing.T) {
	for range 1000 {
		s, err := randomSubnet()
		if err != nil {
			t.Fatal(err)
		}
		if s.Bits() != 24 || s.Masked() != s || !underlayRange.Contains(s.Addr()) {
			t.Fatalf("randomSubnet() = %s: not a /24 inside %s", s, underlayRange)
		}
	}
}
