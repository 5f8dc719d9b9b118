package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/vishvananda/netlink"
)

// routeHook keeps one route per peer prefix through the WireGuard device in
// the configured table, each marked with the hook's route protocol so that
// the routes it owns can be told from everybody else's by reading the
// kernel alone: no state file, and a restarted hook knows what is stale.
//
// Stop leaves the routes in place. The agent stops its hooks whenever it
// stops, and an agent restart (an upgrade, a crash, systemd) must not cut
// traffic to the peers; the next run's first Apply removes what is stale.
// To remove them by hand: ip route flush table TABLE proto 73 (or the
// configured protocol).
type routeHook struct {
	log hclog.Logger
	nl  *netlink.Handle

	mu     sync.Mutex
	cfg    config
	device string
	ready  bool // Configure succeeded
	// sweep is set by Configure: routes of ours may sit in tables other than
	// cfg.Table (the table changed, in this process or since an earlier run).
	// They are removed after the first Apply that installed the new routes,
	// so moving to a new table never leaves a peer without a route.
	sweep bool
}

var _ sdk.Hook = (*routeHook)(nil)

func newRouteHook(log hclog.Logger, nl *netlink.Handle) *routeHook {
	return &routeHook{log: log, nl: nl}
}

// Configure reads the hook's config (table, metric, protocol) and the
// device's name. It touches no route: the device may not exist yet.
func (h *routeHook) Configure(_ context.Context, node sdk.Node) error {
	cfg, err := parseConfig(node.Config)
	if err != nil {
		return err
	}
	if node.Device == "" {
		return errors.New("configure route hook: the node names no WireGuard device")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cfg, h.device, h.ready, h.sweep = cfg, node.Device, true, true
	h.log.Info("configured", "device", node.Device, "table", cfg.Table,
		"protocol", cfg.Protocol, "metric", metricText(cfg.Metric))
	return nil
}

// Apply makes the routes with the hook's protocol through the device in the
// table equal change.Peers' prefixes: missing ones are added first, then
// the others removed. One route that cannot be added does not keep the
// others from being made; every failure is in the returned error, and a
// device that does not exist yet is an error too (the agent retries).
func (h *routeHook) Apply(ctx context.Context, change sdk.Change) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ready {
		return errors.New("apply routes: Apply before Configure")
	}
	link, err := h.nl.LinkByName(h.device)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("apply routes: device %s does not exist: %w", h.device, err)
		}
		return fmt.Errorf("apply routes: find device %s: %w", h.device, err)
	}
	idx := link.Attrs().Index
	want, errs := h.desired(change.Peers)
	have, err := listOwned(h.nl, h.cfg.Table, h.cfg.Protocol, idx)
	if err != nil {
		return fmt.Errorf("apply routes: %w", err)
	}
	haveKeys := make(map[routeKey]bool, len(have))
	for _, r := range have {
		if k, ok := keyOf(r); ok {
			haveKeys[k] = true
		}
	}
	for _, k := range want.order {
		if haveKeys[k] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("apply routes: %w", err))...)
		}
		errs = append(errs, h.add(k, idx, want.peer[k]))
	}
	for _, r := range have {
		k, ok := keyOf(r)
		if _, wanted := want.peer[k]; !ok || !wanted {
			errs = append(errs, h.remove(r, k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return h.sweepOtherTables(idx)
}

// Stop leaves every route in place; see routeHook.
func (h *routeHook) Stop(context.Context) error {
	h.log.Info("stopping; routes stay until the next run removes stale ones")
	return nil
}

// wantedRoutes is the set of routes change.Peers asks for, in peer order.
type wantedRoutes struct {
	order []routeKey
	peer  map[routeKey]string // the peer's name, for the log
}

func (h *routeHook) desired(peers []sdk.Peer) (wantedRoutes, []error) {
	want := wantedRoutes{peer: make(map[routeKey]string, len(peers))}
	var errs []error
	for _, p := range peers {
		if !p.Prefix.IsValid() {
			errs = append(errs, fmt.Errorf("peer %q (%s): no valid prefix", p.Name, p.PublicKey))
			continue
		}
		dst := p.Prefix.Masked()
		k := routeKey{dst: dst, priority: h.cfg.priority(dst.Addr().Is6())}
		if _, dup := want.peer[k]; dup {
			continue
		}
		want.order = append(want.order, k)
		want.peer[k] = p.Name
	}
	return want, errs
}

func (h *routeHook) add(k routeKey, link int, peerName string) error {
	adopted, err := addRoute(h.nl, newRoute(k.dst, link, h.cfg))
	if err != nil {
		return fmt.Errorf("add route %s dev %s table %s: %w", k, h.device, tableName(h.cfg.Table), err)
	}
	msg := "route added"
	if adopted {
		msg = "route adopted"
	}
	h.log.Info(msg, "prefix", k.dst.String(), "metric", k.priority, "peer", peerName,
		"device", h.device, "table", h.cfg.Table, "protocol", h.cfg.Protocol)
	return nil
}

func (h *routeHook) remove(r netlink.Route, k routeKey) error {
	if err := h.nl.RouteDel(&r); err != nil {
		return fmt.Errorf("remove route %s dev %s table %s: %w", k, h.device, tableName(r.Table), err)
	}
	h.log.Info("route removed", "prefix", k.dst.String(), "metric", k.priority,
		"device", h.device, "table", r.Table, "protocol", int(r.Protocol))
	return nil
}

// sweepOtherTables removes the hook's routes through the device from every
// table but the configured one, once after each Configure.
func (h *routeHook) sweepOtherTables(link int) error {
	if !h.sweep {
		return nil
	}
	all, err := listOwned(h.nl, 0, h.cfg.Protocol, link)
	if err != nil {
		return fmt.Errorf("sweep other tables: %w", err)
	}
	var errs []error
	for _, r := range all {
		if r.Table == h.cfg.Table {
			continue
		}
		k, _ := keyOf(r)
		errs = append(errs, h.remove(r, k))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep other tables: %w", err)
	}
	h.sweep = false
	return nil
}

func metricText(m *int) string {
	if m == nil {
		return "kernel default"
	}
	return strconv.Itoa(*m)
}
