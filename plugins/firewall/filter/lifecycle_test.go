package filter_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/firewall/filter"
	"github.com/ikto-mesh/ikto/plugins/firewall/internal/nstest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

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
