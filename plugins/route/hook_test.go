package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fixture is one test's network namespace with a TUN link standing in
// for the WireGuard device.
type fixture struct {
	ns  netns.NsHandle
	nl  *netlink.Handle // the test's own view of the kernel
	dev string
	log *logbuf.Buffer
	// newHook is a new unconfigured hook, as a restarted process is.
	newHook func() *routeHook
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	requireRoot(t)
	f := &fixture{ns: newNamespace(t), dev: "wgr" + runSuffix}
	f.nl = testHandle(t, f.ns)
	addTun(t, f.ns, f.nl, f.dev)
	logger, buf := testLogger(t)
	f.log = buf
	// Each hook gets its own handle, as a restarted hook process would.
	f.newHook = func() *routeHook { return newRouteHook(logger, testHandle(t, f.ns)) }
	return f
}

// configured is a new hook (a fresh process) configured with cfg.
func (f *fixture) configured(t *testing.T, cfg string) *routeHook {
	t.Helper()
	h := f.newHook()
	configure(t, h, f.dev, cfg)
	return h
}

func configure(t *testing.T, h *routeHook, dev, cfg string) {
	t.Helper()
	node := sdk.Node{Device: dev, Mesh: netip.MustParsePrefix("fd10::/16")}
	if cfg != "" {
		node.Config = json.RawMessage(cfg)
	}
	if err := h.Configure(context.Background(), node); err != nil {
		t.Fatalf("Configure(%s): %v", cfg, err)
	}
}

func apply(t *testing.T, h *routeHook, prefixes ...string) {
	t.Helper()
	if err := h.Apply(context.Background(), sdk.Change{Peers: peers(prefixes...)}); err != nil {
		t.Fatalf("Apply(%v): %v", prefixes, err)
	}
}

func peers(prefixes ...string) []sdk.Peer {
	out := make([]sdk.Peer, 0, len(prefixes))
	for i, p := range prefixes {
		out = append(out, sdk.Peer{
			Name:     fmt.Sprintf("host-%d", i),
			Prefix:   netip.MustParsePrefix(p),
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 2)}), 51820),
		})
	}
	return out
}

// wantRoutes formats the routes the kernel should hold, as routeLines does.
func wantRoutes(table int, dev string, metric int, prefixes ...string) []string {
	out := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, fmt.Sprintf("table %d %s dev %s metric %d", table, p, dev, metric))
	}
	return out
}

func checkRoutes(t *testing.T, f *fixture, proto int, want []string) {
	t.Helper()
	if diff := cmp.Diff(want, routeLines(t, f.nl, proto)); diff != "" {
		t.Errorf("routes with protocol %d (-want +got):\n%s", proto, diff)
	}
}

func TestApplyInstallsOneRoutePerPeer(t *testing.T) {
	tests := []struct {
		name     string
		cfg      string
		proto    int
		prefixes []string
		table    int
		metric   int
	}{
		{"ipv6 main table", "", defaultProtocol, []string{"fd10:1::/48", "fd10:2::/48"}, 254, 1024},
		{"ipv4 own table with metric", `{"table": 100, "metric": 50}`, defaultProtocol, []string{"198.18.1.0/24", "198.18.2.0/24"}, 100, 50},
		{"ipv6 large table number", `{"table": 70000, "metric": 7}`, defaultProtocol, []string{"fd10:3::/48"}, 70000, 7},
		{"own protocol number", `{"protocol": 201}`, 201, []string{"198.18.3.0/24"}, 254, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.configured(t, tt.cfg)
			apply(t, h, tt.prefixes...)
			checkRoutes(t, f, tt.proto, wantRoutes(tt.table, f.dev, tt.metric, tt.prefixes...))
			if got := len(f.log.Entries("route added")); got != len(tt.prefixes) {
				t.Errorf("%d \"route added\" log lines, want %d", got, len(tt.prefixes))
			}
			// The same peers again change nothing.
			apply(t, h, tt.prefixes...)
			checkRoutes(t, f, tt.proto, wantRoutes(tt.table, f.dev, tt.metric, tt.prefixes...))
			if got := len(f.log.Entries("route added")) + len(f.log.Entries("route removed")); got != len(tt.prefixes) {
				t.Errorf("a repeated Apply changed routes: %d change lines, want %d", got, len(tt.prefixes))
			}
		})
	}
}

// Departed peers lose their route; routes that are not the hook's (another
// protocol on the device, the hook's protocol on another device) stay.
func TestApplyRemovesDepartedPeersOnly(t *testing.T) {
	f := newFixture(t)
	other := "oth" + runSuffix
	addTun(t, f.ns, f.nl, other)
	foreign := []*netlink.Route{
		routeVia(t, f.nl, f.dev, "fd20:1::/48", 254, unix.RTPROT_STATIC),
		routeVia(t, f.nl, other, "fd10:9::/48", 254, defaultProtocol),
	}
	for _, r := range foreign {
		if err := f.nl.RouteAdd(r); err != nil {
			t.Fatalf("add foreign route %s: %v", r.Dst, err)
		}
	}
	h := f.configured(t, "")
	apply(t, h, "fd10:1::/48", "fd10:2::/48", "198.18.5.0/24")
	apply(t, h, "fd10:2::/48")
	checkRoutes(t, f, defaultProtocol, []string{
		"table 254 fd10:2::/48 dev " + f.dev + " metric 1024",
		"table 254 fd10:9::/48 dev " + other + " metric 1024",
	})
	static := routeLines(t, f.nl, unix.RTPROT_STATIC)
	if diff := cmp.Diff([]string{"table 254 fd20:1::/48 dev " + f.dev + " metric 1024"}, static); diff != "" {
		t.Errorf("static routes (-want +got):\n%s", diff)
	}
	if got := len(f.log.Entries("route removed")); got != 2 {
		t.Errorf("%d \"route removed\" log lines, want 2", got)
	}
}

// Routes an earlier run left behind (a departed peer in the table, a table
// used before) are gone after a new process's first Apply.
func TestFirstApplyRemovesStaleRoutes(t *testing.T) {
	f := newFixture(t)
	for _, r := range []*netlink.Route{
		routeVia(t, f.nl, f.dev, "fd10:7::/48", 254, defaultProtocol),
		routeVia(t, f.nl, f.dev, "fd10:1::/48", 100, defaultProtocol),
		routeVia(t, f.nl, f.dev, "198.18.7.0/24", 100, defaultProtocol),
	} {
		if err := f.nl.RouteAdd(r); err != nil {
			t.Fatalf("add stale route %s: %v", r.Dst, err)
		}
	}
	h := f.configured(t, "")
	apply(t, h, "fd10:1::/48")
	checkRoutes(t, f, defaultProtocol, wantRoutes(254, f.dev, 1024, "fd10:1::/48"))
}

// A changed table moves the routes, in the same process and across a
// restart; a changed metric replaces them.
func TestConfigureChangesMoveRoutes(t *testing.T) {
	prefixes := []string{"198.18.8.0/24", "fd10:8::/48"}
	tests := []struct {
		name    string
		restart bool
		from    string
		to      string
		want    func(dev string) []string
	}{
		{"table in process", false, `{"table": 100}`, `{"table": 200}`, func(dev string) []string {
			return append(wantRoutes(200, dev, 0, prefixes[0]), wantRoutes(200, dev, 1024, prefixes[1])...)
		}},
		{"table across restart", true, `{"table": 100}`, `{"table": 254, "metric": 5}`, func(dev string) []string {
			return wantRoutes(254, dev, 5, prefixes...)
		}},
		{"metric in process", false, `{"metric": 10}`, `{"metric": 20}`, func(dev string) []string {
			return wantRoutes(254, dev, 20, prefixes...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.configured(t, tt.from)
			apply(t, h, prefixes...)
			if tt.restart {
				h = f.newHook()
			}
			configure(t, h, f.dev, tt.to)
			apply(t, h, prefixes...)
			checkRoutes(t, f, defaultProtocol, tt.want(f.dev))
		})
	}
}

// A device that is not there yet is an error, and the next Apply once it
// is there makes the routes.
func TestApplyBeforeDeviceExists(t *testing.T) {
	f := newFixture(t)
	late := "late" + runSuffix
	h := f.newHook()
	configure(t, h, late, "")
	err := h.Apply(context.Background(), sdk.Change{Peers: peers("fd10:1::/48")})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Apply without the device: err = %v, want one saying it does not exist", err)
	}
	addTun(t, f.ns, f.nl, late)
	apply(t, h, "fd10:1::/48")
	checkRoutes(t, f, defaultProtocol, wantRoutes(254, late, 1024, "fd10:1::/48"))
}

// A route to a peer's prefix that is already there through the device is
// adopted; one through another device is reported and left alone, and the
// other peers still get their routes.
func TestApplyMeetsExistingRoutes(t *testing.T) {
	f := newFixture(t)
	other := "oth" + runSuffix
	addTun(t, f.ns, f.nl, other)
	for _, r := range []*netlink.Route{
		routeVia(t, f.nl, f.dev, "fd10:1::/48", 254, unix.RTPROT_BOOT),
		routeVia(t, f.nl, other, "fd10:2::/48", 254, unix.RTPROT_STATIC),
	} {
		if err := f.nl.RouteAdd(r); err != nil {
			t.Fatalf("add route %s: %v", r.Dst, err)
		}
	}
	h := f.configured(t, "")
	err := h.Apply(context.Background(), sdk.Change{Peers: peers("fd10:1::/48", "fd10:2::/48", "fd10:3::/48")})
	if err == nil || !strings.Contains(err.Error(), "dev "+other) {
		t.Fatalf("Apply: err = %v, want one naming the route through %s", err, other)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(254, f.dev, 1024, "fd10:1::/48", "fd10:3::/48"))
	checkRoutes(t, f, unix.RTPROT_STATIC, []string{"table 254 fd10:2::/48 dev " + other + " metric 1024"})
	if got := len(f.log.Entries("route adopted")); got != 1 {
		t.Errorf("%d \"route adopted\" log lines, want 1", got)
	}
}

func TestStopLeavesRoutes(t *testing.T) {
	f := newFixture(t)
	h := f.configured(t, `{"table": 100}`)
	apply(t, h, "fd10:1::/48", "198.18.1.0/24")
	if err := h.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, append(wantRoutes(100, f.dev, 0, "198.18.1.0/24"), wantRoutes(100, f.dev, 1024, "fd10:1::/48")...))
}

// routeVia is a route to dst through the link named dev, as someone other
// than the hook under test would make it.
func routeVia(t *testing.T, h *netlink.Handle, dev, dst string, table, proto int) *netlink.Route {
	t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: n, Table: table, Protocol: netlink.RouteProtocol(proto)}
	if n.IP.To4() != nil {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}
