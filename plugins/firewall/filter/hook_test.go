package filter_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/firewall/filter"
	"github.com/ikto-mesh/ikto/plugins/firewall/internal/nstest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// Chain headers as describeChains writes them: hook 1 is input, 2 forward;
// priority 0 is filter; policy 1 is accept.
const (
	inputHead   = "type filter hook 1 priority 0 policy 1"
	forwardHead = "type filter hook 2 priority 0 policy 1"
)

// newHook returns a hook working in a namespace of its own.
func newHook(t *testing.T) (*filter.Hook, *nstest.NS, *nftables.Conn) {
	t.Helper()
	ns := nstest.New(t)
	return filter.New(filter.WithNetNS(ns.Fd())), ns, nftConn(t, ns)
}

func v4Node() sdk.Node {
	return sdk.Node{
		Self:       sdk.Peer{Name: "self", Prefix: netip.MustParsePrefix("100.64.3.0/24")},
		Mesh:       netip.MustParsePrefix("100.64.0.0/10"),
		Device:     "wg0",
		ListenPort: 4500,
		Config:     json.RawMessage(`{"table": "mesh2"}`),
	}
}

func TestConfigureInstallsTable(t *testing.T) {
	nstest.Require(t) // before the cases: a test whose every case skips must say SKIP itself
	tests := []struct {
		name       string
		node       sdk.Node
		table      string
		wantSets   []string
		wantChains map[string][]string
	}{{
		name:  "IPv6 mesh, default table",
		node:  sdktest.Node(""),
		table: "ikto",
		wantSets: []string{
			"peer_endpoints_v4 ipv4_addr", "peer_endpoints_v6 ipv6_addr", "peer_prefixes ipv6_addr interval",
		},
		wantChains: map[string][]string{
			"input": {
				inputHead,
				"nfproto==ipv4 l4proto==udp th[2:2]==51820 nh[12:4]!@peer_endpoints_v4 counter:wg_port_drops drop",
				"nfproto==ipv6 l4proto==udp th[2:2]==51820 nh[8:16]!@peer_endpoints_v6 counter:wg_port_drops drop",
				"iifname==wg-ikto nfproto==ipv6 nh[24:16]/48==fd10:: nh[8:16]!@peer_prefixes counter:prefix_drops drop",
			},
			"forward": {
				forwardHead,
				"iifname==wg-ikto nfproto==ipv6 nh[24:16]/48==fd10:: nh[8:16]!@peer_prefixes counter:prefix_drops drop",
			},
		},
	}, {
		name:  "IPv4 mesh, table named in the config",
		node:  v4Node(),
		table: "mesh2",
		wantSets: []string{
			"peer_endpoints_v4 ipv4_addr", "peer_endpoints_v6 ipv6_addr", "peer_prefixes ipv4_addr interval",
		},
		wantChains: map[string][]string{
			"input": {
				inputHead,
				"nfproto==ipv4 l4proto==udp th[2:2]==4500 nh[12:4]!@peer_endpoints_v4 counter:wg_port_drops drop",
				"nfproto==ipv6 l4proto==udp th[2:2]==4500 nh[8:16]!@peer_endpoints_v6 counter:wg_port_drops drop",
				"iifname==wg0 nfproto==ipv4 nh[16:4]/24==100.64.3.0 nh[12:4]!@peer_prefixes counter:prefix_drops drop",
			},
			"forward": {
				forwardHead,
				"iifname==wg0 nfproto==ipv4 nh[16:4]/24==100.64.3.0 nh[12:4]!@peer_prefixes counter:prefix_drops drop",
			},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, c := newHook(t)
			if err := h.Configure(t.Context(), tt.node); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if diff := cmp.Diff(tt.wantSets, describeSets(t, c, tt.table)); diff != "" {
				t.Errorf("sets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantChains, describeChains(t, c, tt.table)); diff != "" {
				t.Errorf("chains (-want +got):\n%s", diff)
			}
			for _, name := range []string{filter.CounterWGPortDrops, filter.CounterPrefixDrops} {
				if got := readCounter(t, c, tt.table, name); got != 0 {
					t.Errorf("counter %s = %d on a fresh table, want 0", name, got)
				}
			}
		})
	}
}

// TestApplyWritesOnlyTheDifference follows one hook through a mesh's life and
// checks after each Apply both what the sets hold and what the kernel was
// told: one transaction of element additions and deletions, nothing else.
func TestApplyWritesOnlyTheDifference(t *testing.T) {
	h, _, c := newHook(t)
	if err := h.Configure(t.Context(), sdktest.Node("")); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	moved := sdktest.Peer(2)
	moved.Endpoint = netip.MustParseAddrPort("[fd00:18::2]:51820")
	neighbour := sdktest.Peer(5)
	neighbour.Prefix = netip.MustParsePrefix("fd10:1:1::/48")
	steps := []struct {
		name     string
		peers    []sdk.Peer
		wantSets map[string][]string
		wantTx   []string // nil: Apply must not write at all
	}{{
		name:  "three peers join",
		peers: sdktest.Peers(3),
		wantSets: map[string][]string{
			"peer_endpoints_v4": {"198.18.0.1", "198.18.0.2", "198.18.0.3"},
			"peer_endpoints_v6": {},
			"peer_prefixes":     {"fd10:1:1:: end", "fd10:1::", "fd10:2:1:: end", "fd10:2::", "fd10:3:1:: end", "fd10:3::"},
		},
		wantTx: []string{
			"newsetelem 198.18.0.1", "newsetelem 198.18.0.2", "newsetelem 198.18.0.3",
			"newsetelem fd10:1:1:: end", "newsetelem fd10:1::", "newsetelem fd10:2:1:: end",
			"newsetelem fd10:2::", "newsetelem fd10:3:1:: end", "newsetelem fd10:3::",
		},
	}, {
		name:  "the same peers again",
		peers: sdktest.Peers(3),
		wantSets: map[string][]string{
			"peer_endpoints_v4": {"198.18.0.1", "198.18.0.2", "198.18.0.3"},
			"peer_endpoints_v6": {},
			"peer_prefixes":     {"fd10:1:1:: end", "fd10:1::", "fd10:2:1:: end", "fd10:2::", "fd10:3:1:: end", "fd10:3::"},
		},
	}, {
		name:  "one moves to IPv6, one leaves, one joins",
		peers: []sdk.Peer{sdktest.Peer(1), moved, sdktest.Peer(4)},
		wantSets: map[string][]string{
			"peer_endpoints_v4": {"198.18.0.1", "198.18.0.4"},
			"peer_endpoints_v6": {"fd00:18::2"},
			"peer_prefixes":     {"fd10:1:1:: end", "fd10:1::", "fd10:2:1:: end", "fd10:2::", "fd10:4:1:: end", "fd10:4::"},
		},
		wantTx: []string{
			"delsetelem 198.18.0.2", "delsetelem 198.18.0.3", "delsetelem fd10:3:1:: end", "delsetelem fd10:3::",
			"newsetelem 198.18.0.4", "newsetelem fd00:18::2", "newsetelem fd10:4:1:: end", "newsetelem fd10:4::",
		},
	}, {
		// fd10:1::/48 ends where fd10:1:1::/48 starts: one key, once as an
		// interval's end and once as the next one's start.
		name:  "a neighbouring prefix joins",
		peers: []sdk.Peer{sdktest.Peer(1), neighbour, moved, sdktest.Peer(4)},
		wantSets: map[string][]string{
			"peer_endpoints_v4": {"198.18.0.1", "198.18.0.4", "198.18.0.5"},
			"peer_endpoints_v6": {"fd00:18::2"},
			"peer_prefixes": {"fd10:1:1::", "fd10:1:1:: end", "fd10:1:2:: end", "fd10:1::",
				"fd10:2:1:: end", "fd10:2::", "fd10:4:1:: end", "fd10:4::"},
		},
		wantTx: []string{"newsetelem 198.18.0.5", "newsetelem fd10:1:1::", "newsetelem fd10:1:2:: end"},
	}, {
		name:  "the prefix before it leaves",
		peers: []sdk.Peer{neighbour, moved, sdktest.Peer(4)},
		wantSets: map[string][]string{
			"peer_endpoints_v4": {"198.18.0.4", "198.18.0.5"},
			"peer_endpoints_v6": {"fd00:18::2"},
			"peer_prefixes": {"fd10:1:1::", "fd10:1:2:: end",
				"fd10:2:1:: end", "fd10:2::", "fd10:4:1:: end", "fd10:4::"},
		},
		wantTx: []string{"delsetelem 198.18.0.1", "delsetelem fd10:1:1:: end", "delsetelem fd10:1::"},
	}, {
		name:  "everyone leaves",
		peers: nil,
		wantSets: map[string][]string{
			"peer_endpoints_v4": {}, "peer_endpoints_v6": {}, "peer_prefixes": {},
		},
		wantTx: []string{
			"delsetelem 198.18.0.4", "delsetelem 198.18.0.5", "delsetelem fd00:18::2",
			"delsetelem fd10:1:1::", "delsetelem fd10:1:2:: end", "delsetelem fd10:2:1:: end",
			"delsetelem fd10:2::", "delsetelem fd10:4:1:: end", "delsetelem fd10:4::",
		},
	}}
	tx := watchTransactions(t, c)
	var prev []sdk.Peer
	pending := false // a no-op step's absence of a transaction is checked by the next one
	for _, step := range steps {
		if err := h.Apply(t.Context(), sdk.Diff(prev, step.peers)); err != nil {
			t.Fatalf("%s: Apply: %v", step.name, err)
		}
		prev = step.peers
		if diff := cmp.Diff(step.wantSets, readSets(t, c, "ikto")); diff != "" {
			t.Errorf("%s: sets (-want +got):\n%s", step.name, diff)
		}
		if step.wantTx == nil {
			pending = true
			continue
		}
		if diff := cmp.Diff(step.wantTx, tx.next(t)); diff != "" {
			t.Errorf("%s: transaction (-want +got)%s:\n%s", step.name,
				map[bool]string{true: " (or the step before wrote when it should not have)"}[pending], diff)
		}
		pending = false
	}
}

// TestConfigureCarriesMembersOver is a hook restart: a new process (a new
// Hook) configures over the table the last one left, keeps its members until
// its first Apply, and that Apply works from what the kernel holds, including
// an element someone added by hand.
func TestConfigureCarriesMembersOver(t *testing.T) {
	first, ns, c := newHook(t)
	node := sdktest.Node("")
	if err := first.Configure(t.Context(), node); err != nil {
		t.Fatalf("first Configure: %v", err)
	}
	if err := first.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("first Apply: %v", err)
	}
	want := readSets(t, c, "ikto")

	second := filter.New(filter.WithNetNS(ns.Fd()))
	if err := second.Configure(t.Context(), node); err != nil {
		t.Fatalf("second Configure: %v", err)
	}
	if diff := cmp.Diff(want, readSets(t, c, "ikto")); diff != "" {
		t.Fatalf("members after the restart's Configure (-before +after):\n%s", diff)
	}

	stray := &nftables.Set{Table: inet("ikto"), Name: filter.SetEndpoints4, KeyType: nftables.TypeIPAddr}
	if err := c.SetAddElements(stray, []nftables.SetElement{{Key: netip.MustParseAddr("198.18.9.9").AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("add an element by hand: %v", err)
	}
	// The new process starts from nothing, so every peer is Added.
	if err := second.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(1))); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	wantAfter := map[string][]string{
		"peer_endpoints_v4": {"198.18.0.1"},
		"peer_endpoints_v6": {},
		"peer_prefixes":     {"fd10:1:1:: end", "fd10:1::"},
	}
	if diff := cmp.Diff(wantAfter, readSets(t, c, "ikto")); diff != "" {
		t.Errorf("sets after Apply (-want +got):\n%s", diff)
	}
}

// TestConfigureReplacesStaleTable: a table of the same name from an older
// version (another shape) is replaced in one transaction; what still fits
// is carried over.
func TestConfigureReplacesStaleTable(t *testing.T) {
	h, _, c := newHook(t)
	tb := c.AddTable(inet("ikto"))
	c.AddChain(&nftables.Chain{Name: "old_chain", Table: tb})
	endpoints := &nftables.Set{Table: tb, Name: filter.SetEndpoints4, KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(endpoints, []nftables.SetElement{{Key: netip.MustParseAddr("198.18.0.7").AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	wrongFamily := &nftables.Set{Table: tb, Name: filter.SetPrefixes, KeyType: nftables.TypeIPAddr, Interval: true}
	if err := c.AddSet(wrongFamily, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("create the stale table: %v", err)
	}
	tx := watchTransactions(t, c)

	if err := h.Configure(t.Context(), sdktest.Node("")); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	got := tx.next(t)
	if !strings.Contains(strings.Join(got, ","), "deltable,") || !strings.Contains(strings.Join(got, ","), "newtable") {
		t.Errorf("Configure's transaction = %v, want the table deleted and created in it", got)
	}
	chains := describeChains(t, c, "ikto")
	if _, ok := chains["old_chain"]; ok || len(chains) != 2 {
		t.Errorf("chains after Configure = %v, want only input and forward", chains)
	}
	wantSets := map[string][]string{
		"peer_endpoints_v4": {"198.18.0.7"},
		"peer_endpoints_v6": {},
		"peer_prefixes":     {},
	}
	if diff := cmp.Diff(wantSets, readSets(t, c, "ikto")); diff != "" {
		t.Errorf("sets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{
		"peer_endpoints_v4 ipv4_addr", "peer_endpoints_v6 ipv6_addr", "peer_prefixes ipv6_addr interval",
	}, describeSets(t, c, "ikto")); diff != "" {
		t.Errorf("set types (-want +got):\n%s", diff)
	}
}

// TestApplyRepairsTable: what someone else did to the table (nft flush
// ruleset, a firewall reload, nft flush table) is undone by the next Apply.
func TestApplyRepairsTable(t *testing.T) {
	nstest.Require(t) // before the cases: a test whose every case skips must say SKIP itself
	tests := []struct {
		name   string
		damage func(*nftables.Conn)
	}{
		{"table deleted", func(c *nftables.Conn) { c.DelTable(inet("ikto")) }},
		{"ruleset flushed", func(c *nftables.Conn) { c.FlushRuleset() }},
		{"rules flushed, sets kept", func(c *nftables.Conn) { c.FlushTable(inet("ikto")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, c := newHook(t)
			if err := h.Configure(t.Context(), sdktest.Node("")); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if err := h.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(2))); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			wantSets, wantChains := readSets(t, c, "ikto"), describeChains(t, c, "ikto")
			tt.damage(c)
			if err := c.Flush(); err != nil {
				t.Fatalf("damage the table: %v", err)
			}
			if tableExists(t, c, "ikto") && cmp.Equal(wantChains, describeChains(t, c, "ikto")) {
				t.Fatal("table unchanged by the damage")
			}
			if err := h.Apply(t.Context(), sdk.Diff(sdktest.Peers(2), sdktest.Peers(2))); err != nil {
				t.Fatalf("Apply after the break: %v", err)
			}
			if diff := cmp.Diff(wantSets, readSets(t, c, "ikto")); diff != "" {
				t.Errorf("sets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantChains, describeChains(t, c, "ikto")); diff != "" {
				t.Errorf("chains (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStopRemovesTable(t *testing.T) {
	nstest.Require(t) // before the cases: a test whose every case skips must say SKIP itself
	tests := []struct {
		name      string
		configure bool
		before    func(*testing.T, *nftables.Conn)
	}{
		{name: "configured", configure: true},
		{name: "table already gone", configure: true, before: func(t *testing.T, c *nftables.Conn) {
			c.DelTable(inet("ikto"))
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "never configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, c := newHook(t)
			if tt.configure {
				if err := h.Configure(t.Context(), sdktest.Node("")); err != nil {
					t.Fatalf("Configure: %v", err)
				}
				if err := h.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(1))); err != nil {
					t.Fatalf("Apply: %v", err)
				}
			}
			if tt.before != nil {
				tt.before(t, c)
			}
			if err := h.Stop(t.Context()); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if tableExists(t, c, "ikto") {
				t.Error("table inet ikto still there after Stop")
			}
			if err := h.Stop(t.Context()); err != nil {
				t.Errorf("second Stop: %v", err)
			}
			if err := h.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(1))); err == nil {
				t.Error("Apply after Stop succeeded, want a not-configured error")
			}
		})
	}
}

// TestTableName: two hooks with their own tables share a namespace without
// touching each other, and a hook whose table name changes takes its old
// table away.
func TestTableName(t *testing.T) {
	a, ns, c := newHook(t)
	b := filter.New(filter.WithNetNS(ns.Fd()))
	if err := a.Configure(t.Context(), sdktest.Node(`{"table": "mesh_a"}`)); err != nil {
		t.Fatalf("Configure a: %v", err)
	}
	if err := b.Configure(t.Context(), v4Node()); err != nil {
		t.Fatalf("Configure b: %v", err)
	}
	if err := a.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(1))); err != nil {
		t.Fatalf("Apply a: %v", err)
	}
	if got := readSets(t, c, "mesh2")["peer_endpoints_v4"]; len(got) != 0 {
		t.Errorf("b's endpoints = %v after a's Apply, want none", got)
	}
	if err := a.Configure(t.Context(), sdktest.Node(`{"table": "mesh_c"}`)); err != nil {
		t.Fatalf("Configure a with a new table name: %v", err)
	}
	if tableExists(t, c, "mesh_a") || !tableExists(t, c, "mesh_c") || !tableExists(t, c, "mesh2") {
		t.Errorf("after renaming a's table: mesh_a %v mesh_c %v mesh2 %v; want false true true",
			tableExists(t, c, "mesh_a"), tableExists(t, c, "mesh_c"), tableExists(t, c, "mesh2"))
	}
	if err := a.Stop(t.Context()); err != nil {
		t.Fatalf("Stop a: %v", err)
	}
	if !tableExists(t, c, "mesh2") {
		t.Error("a's Stop removed b's table")
	}
}

// TestThroughPlugin drives the hook through the SDK's real gRPC shims, as the
// agent does, errors included.
func TestThroughPlugin(t *testing.T) {
	ns := nstest.New(t)
	c := nftConn(t, ns)
	hook := sdktest.Serve(t, filter.New(filter.WithNetNS(ns.Fd())))

	err := hook.Configure(t.Context(), sdktest.Node(`{"tabel": "x"}`))
	if err == nil || !strings.Contains(err.Error(), `unknown field "tabel"`) {
		t.Fatalf("Configure with a misspelt key = %v, want an error naming it", err)
	}
	if err := hook.Configure(t.Context(), sdktest.Node(`{"table": "viaplugin"}`)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := hook.Apply(t.Context(), sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := map[string][]string{
		"peer_endpoints_v4": {"198.18.0.1", "198.18.0.2"},
		"peer_endpoints_v6": {},
		"peer_prefixes":     {"fd10:1:1:: end", "fd10:1::", "fd10:2:1:: end", "fd10:2::"},
	}
	if diff := cmp.Diff(want, readSets(t, c, "viaplugin")); diff != "" {
		t.Errorf("sets (-want +got):\n%s", diff)
	}
	if err := hook.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if tableExists(t, c, "viaplugin") {
		t.Error("table still there after Stop")
	}
}
