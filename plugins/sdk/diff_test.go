package sdk_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

func TestDiff(t *testing.T) {
	p1, p2, p3, p4 := sdktest.Peer(1), sdktest.Peer(2), sdktest.Peer(3), sdktest.Peer(4)
	moved := p2
	moved.Endpoint = netip.MustParseAddrPort("198.18.9.9:51821")
	rekeyed := p3
	rekeyed.PublicKey = sdktest.Peer(99).PublicKey
	renamed := p1
	renamed.Name = "renamed"
	tests := []struct {
		name       string
		prev, next []sdk.Peer
		want       sdk.Change
	}{
		{"nothing", nil, nil, sdk.Change{}},
		{"fresh start: everything added", nil, []sdk.Peer{p3, p1, p2},
			sdk.Change{Peers: []sdk.Peer{p1, p2, p3}, Added: []sdk.Peer{p1, p2, p3}}},
		{"same set, other order", []sdk.Peer{p2, p1}, []sdk.Peer{p1, p2},
			sdk.Change{Peers: []sdk.Peer{p1, p2}}},
		{"everything removed, old values kept", []sdk.Peer{p2, p1}, nil,
			sdk.Change{Removed: []sdk.Peer{p1, p2}}},
		{"endpoint, key and name changes are updates", []sdk.Peer{p1, p2, p3}, []sdk.Peer{rekeyed, moved, renamed},
			sdk.Change{Peers: []sdk.Peer{renamed, moved, rekeyed}, Updated: []sdk.Peer{renamed, moved, rekeyed}}},
		{"all at once", []sdk.Peer{p4, p1, p2}, []sdk.Peer{p3, moved, p1},
			sdk.Change{Peers: []sdk.Peer{p1, moved, p3}, Added: []sdk.Peer{p3}, Updated: []sdk.Peer{moved}, Removed: []sdk.Peer{p4}}},
		{"ipv4 and ipv6 prefixes sort apart", nil,
			[]sdk.Peer{{Prefix: netip.MustParsePrefix("fd10:1::/48")}, {Prefix: netip.MustParsePrefix("100.64.1.0/24")}},
			sdk.Change{
				Peers: []sdk.Peer{{Prefix: netip.MustParsePrefix("100.64.1.0/24")}, {Prefix: netip.MustParsePrefix("fd10:1::/48")}},
				Added: []sdk.Peer{{Prefix: netip.MustParsePrefix("100.64.1.0/24")}, {Prefix: netip.MustParsePrefix("fd10:1::/48")}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev, next := append([]sdk.Peer(nil), tt.prev...), append([]sdk.Peer(nil), tt.next...)
			got := sdk.Diff(tt.prev, tt.next)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
			if got.Empty() != (len(tt.want.Added)+len(tt.want.Updated)+len(tt.want.Removed) == 0) {
				t.Errorf("Empty() = %v for %+v", got.Empty(), got)
			}
			if !cmp.Equal(prev, tt.prev, cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})) ||
				!cmp.Equal(next, tt.next, cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})) {
				t.Error("Diff modified its inputs")
			}
		})
	}
}
