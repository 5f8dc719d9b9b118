package filter

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

func mustItems(t *testing.T, specs ...string) map[item]bool {
	t.Helper()
	items := map[item]bool{}
	for _, s := range specs {
		if p, err := netip.ParsePrefix(s); err == nil {
			items[prefixItem(p)] = true
			continue
		}
		items[item{start: netip.MustParseAddr(s)}] = true
	}
	return items
}

func itemStrings(items map[item]bool) []string {
	var out []string
	for it := range items {
		out = append(out, it.String())
	}
	slices.Sort(out)
	return out
}

func peer(name, endpoint, prefix string) sdk.Peer {
	p := sdk.Peer{Name: name}
	if endpoint != "" {
		p.Endpoint = netip.MustParseAddrPort(endpoint)
	}
	if prefix != "" {
		p.Prefix = netip.MustParsePrefix(prefix)
	}
	return p
}

func TestDesiredMembers(t *testing.T) {
	v6mesh := ruleset{self: netip.MustParsePrefix("fd10:1::/48")}
	v4mesh := ruleset{self: netip.MustParsePrefix("100.64.1.0/24")}
	tests := []struct {
		name        string
		r           ruleset
		peers       []sdk.Peer
		want        map[string][]string
		wantSkipped []string
	}{{
		name:  "no peers",
		r:     v6mesh,
		want:  map[string][]string{},
		peers: nil,
	}, {
		name: "mixed underlay families, mapped and zoned endpoints",
		r:    v6mesh,
		peers: []sdk.Peer{
			peer("a", "198.18.0.2:51820", "fd10:2::/48"),
			peer("b", "[fd00:5::2]:51820", "fd10:3::/48"),
			peer("c", "[::ffff:198.18.0.3]:51000", "fd10:4::/48"),
			peer("d", "[fe80::1%eth0]:51820", "fd10:5::/48"),
		},
		want: map[string][]string{
			SetEndpoints4: {"198.18.0.2", "198.18.0.3"},
			SetEndpoints6: {"fd00:5::2", "fe80::1"},
			SetPrefixes:   {"fd10:2::-fd10:2:1::", "fd10:3::-fd10:3:1::", "fd10:4::-fd10:4:1::", "fd10:5::-fd10:5:1::"},
		},
	}, {
		name: "two peers behind one address count once",
		r:    v4mesh,
		peers: []sdk.Peer{
			peer("a", "198.18.0.2:51820", "100.64.2.0/24"),
			peer("b", "198.18.0.2:51821", "100.64.3.0/24"),
		},
		want: map[string][]string{
			SetEndpoints4: {"198.18.0.2"},
			SetPrefixes:   {"100.64.2.0-100.64.3.0", "100.64.3.0-100.64.4.0"},
		},
	}, {
		name: "unusable records are skipped, the rest kept",
		r:    v6mesh,
		peers: []sdk.Peer{
			peer("noendpoint", "", "fd10:2::/48"),
			peer("unspecified", "[::]:51820", "fd10:3::/48"),
			peer("v4prefix", "198.18.0.4:51820", "100.64.0.0/24"),
			peer("noprefix", "198.18.0.5:51820", ""),
		},
		want: map[string][]string{
			SetEndpoints4: {"198.18.0.4", "198.18.0.5"},
			SetPrefixes:   {"fd10:2::-fd10:2:1::", "fd10:3::-fd10:3:1::"},
		},
		wantSkipped: []string{`"noendpoint"`, `"unspecified"`, `"v4prefix"`, `"noprefix"`},
	}, {
		name: "overlapping prefixes keep the outer one",
		r:    v6mesh,
		peers: []sdk.Peer{
			peer("inner", "198.18.0.2:1", "fd10:2:0:1::/64"),
			peer("outer", "198.18.0.3:1", "fd10:2::/48"),
			peer("dup", "198.18.0.4:1", "fd10:2::/48"),
		},
		want: map[string][]string{
			SetEndpoints4: {"198.18.0.2", "198.18.0.3", "198.18.0.4"},
			SetPrefixes:   {"fd10:2::-fd10:2:1::"},
		},
	}, {
		name:  "a prefix at the end of the address space has no end element",
		r:     v4mesh,
		peers: []sdk.Peer{peer("top", "198.18.0.2:1", "255.255.255.0/24")},
		want: map[string][]string{
			SetEndpoints4: {"198.18.0.2"},
			SetPrefixes:   {"255.255.255.0"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, skipped := tt.r.desiredMembers(tt.peers)
			got := map[string][]string{}
			for name, items := range m {
				if len(items) > 0 {
					got[name] = itemStrings(items)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if len(skipped) != len(tt.wantSkipped) {
				t.Fatalf("skipped %v, want %d naming %v", skipped, len(tt.wantSkipped), tt.wantSkipped)
			}
			for i, err := range skipped {
				if !strings.Contains(err.Error(), tt.wantSkipped[i]) {
					t.Errorf("skipped[%d] = %q, want it to name %s", i, err, tt.wantSkipped[i])
				}
			}
		})
	}
}

func TestElementsRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		interval bool
		items    []string
	}{
		{"addresses", false, []string{"198.18.0.2", "198.18.0.3"}},
		{"v6 addresses", false, []string{"fd00::2", "fd00::3"}},
		{"adjacent prefixes", true, []string{"fd10:1::/48", "fd10:1:1::/48", "fd10:1:2::/48"}},
		{"gaps", true, []string{"100.64.0.0/24", "100.64.9.0/24", "100.64.200.0/21"}},
		{"open-ended", true, []string{"100.64.0.0/24", "255.255.0.0/16"}},
		{"empty", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := mustItems(t, tt.items...)
			els := elements(want)
			// The kernel hands elements back in its own order.
			for i, j := 0, len(els)-1; i < j; i, j = i+1, j-1 {
				els[i], els[j] = els[j], els[i]
			}
			got, err := parseItems(els, tt.interval)
			if err != nil {
				t.Fatalf("parseItems: %v", err)
			}
			if diff := cmp.Diff(itemStrings(want), itemStrings(got)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseItemsRejectsUnclosedInterval(t *testing.T) {
	els := []nftables.SetElement{
		{Key: netip.MustParseAddr("100.64.0.0").AsSlice()},
		{Key: netip.MustParseAddr("100.64.1.0").AsSlice()},
		{Key: netip.MustParseAddr("100.64.2.0").AsSlice(), IntervalEnd: true},
	}
	if got, err := parseItems(els, true); err == nil {
		t.Fatalf("parseItems = %v, want an error for two starts in a row", got)
	}
	stray := []nftables.SetElement{{Key: netip.MustParseAddr("0.0.0.0").AsSlice(), IntervalEnd: true}}
	got, err := parseItems(stray, true)
	if err != nil || len(got) != 0 {
		t.Fatalf("parseItems(lone end) = %v, %v; want nothing and no error", got, err)
	}
}

func TestDiffMembers(t *testing.T) {
	have := members{
		SetEndpoints4: mustItems(t, "198.18.0.2", "198.18.0.3"),
		SetPrefixes:   mustItems(t, "fd10:2::/48", "fd10:3::/48"),
	}
	want := members{
		SetEndpoints4: mustItems(t, "198.18.0.3", "198.18.0.4"),
		SetEndpoints6: mustItems(t),
		SetPrefixes:   mustItems(t, "fd10:2::/48", "fd10:3::/48"),
	}
	got := map[string][2][]string{}
	for name, d := range diffMembers(have, want) {
		got[name] = [2][]string{itemStrings(d.add), itemStrings(d.del)}
	}
	wantDiff := map[string][2][]string{SetEndpoints4: {{"198.18.0.4"}, {"198.18.0.2"}}}
	if diff := cmp.Diff(wantDiff, got); diff != "" {
		t.Errorf("diff (-want +got):\n%s", diff)
	}
	if d := diffMembers(want, want); len(d) != 0 {
		t.Errorf("diff of equal members = %v, want none", d)
	}
}

func TestDecodeConfig(t *testing.T) {
	sdktest.CheckConfigs(t, decodeConfig, []sdktest.ConfigCase[Config]{
		{Raw: "", Want: Config{Table: DefaultTable}},
		{Raw: "null", Want: Config{Table: DefaultTable}},
		{Raw: "{}", Want: Config{Table: DefaultTable}},
		{Raw: `{"table": "ikto_mesh2"}`, Want: Config{Table: "ikto_mesh2"}},
		{Raw: `{"table": ""}`, WantErr: `"table" is empty`},
		{Raw: `{"table": "` + strings.Repeat("x", 256) + `"}`, WantErr: "256 bytes"},
		{Raw: `{"tabel": "x"}`, WantErr: `unknown field "tabel"`},
		{Raw: `[1]`, WantErr: "firewall hook config"},
	})
}

func TestNewRulesetRejectsBadNode(t *testing.T) {
	good := sdk.Node{
		Self:   sdk.Peer{Prefix: netip.MustParsePrefix("fd10:1::/48")},
		Device: "wg-ikto", ListenPort: 51820,
	}
	tests := []struct {
		name    string
		edit    func(*sdk.Node)
		wantErr string
	}{
		{"no device", func(n *sdk.Node) { n.Device = "" }, "wg_dev_name"},
		{"long device", func(n *sdk.Node) { n.Device = "wg-ikto-much-too-long" }, "wg_dev_name"},
		{"port 0", func(n *sdk.Node) { n.ListenPort = 0 }, "wg_port"},
		{"port 65536", func(n *sdk.Node) { n.ListenPort = 65536 }, "wg_port"},
		{"no prefix", func(n *sdk.Node) { n.Self.Prefix = netip.Prefix{} }, "private_address"},
	}
	if _, err := newRuleset(good, Config{Table: DefaultTable}); err != nil {
		t.Fatalf("newRuleset(good node) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := good
			tt.edit(&n)
			_, err := newRuleset(n, Config{Table: DefaultTable})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("newRuleset error = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}
