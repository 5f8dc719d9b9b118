package peer

import (
	"net/netip"
	"testing"
)

// TestCheckEndpoints covers the endpoints a record may not advertise beyond
// the obvious ones in TestCheck: addresses no other host can send to, and
// addresses inside the mesh, which would route WireGuard into itself.
func TestCheckEndpoints(t *testing.T) {
	v4Rules := Rules{Mesh: netip.MustParsePrefix("100.64.0.0/10"), Bits: 24}
	tests := []struct {
		name     string
		rules    Rules
		endpoint string
		want     Reason // "" = accepted
	}{
		{"global v6", rules6, "2001:db8::1", ""},
		{"ula outside the mesh", rules6, "fd00::1", ""},
		{"private v4", rules6, "10.0.0.1", ""},
		{"v4-mapped is unmapped", rules6, "::ffff:198.18.0.2", ""},
		{"link-local v4 is reachable on the link", rules6, "169.254.1.1", ""},
		{"link-local v6 needs a zone", rules6, "fe80::1", ReasonBadEndpoint},
		{"this network", rules6, "0.1.2.3", ReasonBadEndpoint},
		{"mapped loopback", rules6, "::ffff:127.0.0.1", ReasonBadEndpoint},
		{"mapped unspecified", rules6, "::ffff:0.0.0.0", ReasonBadEndpoint},
		{"interface-local multicast", rules6, "ff01::1", ReasonBadEndpoint},
		{"v4 multicast", rules6, "239.1.2.3", ReasonBadEndpoint},
		{"zone", rules6, "fe80::1%eth0", ReasonBadEndpoint},
		{"inside the v6 mesh", rules6, "fd10:99::1", ReasonBadEndpoint},
		{"inside the v4 mesh", v4Rules, "100.64.9.1", ReasonBadEndpoint},
		{"mapped inside the v4 mesh", v4Rules, "::ffff:100.64.9.1", ReasonBadEndpoint},
		{"v6 endpoint of a v4 mesh", v4Rules, "fd10::1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := netip.MustParsePrefix("fd10:2082:5bc1::/48")
			if tt.rules.Mesh.Addr().Is4() {
				prefix = netip.MustParsePrefix("100.64.7.0/24")
			}
			r := Record{Name: "a", PublicKey: testKey(9).String(), AdvertiseAddress: tt.endpoint, AllowedIP: prefix.String(), WGPort: 51820}
			_, rej := tt.rules.Check(Key(prefix), r.Encode(), 3)
			switch {
			case tt.want == "" && rej != nil:
				t.Fatalf("endpoint %s rejected: %v", tt.endpoint, rej)
			case tt.want != "" && rej == nil:
				t.Fatalf("endpoint %s accepted, want %s", tt.endpoint, tt.want)
			case tt.want != "" && rej.Reason != tt.want:
				t.Fatalf("endpoint %s rejected as %s, want %s", tt.endpoint, rej.Reason, tt.want)
			}
		})
	}
}
