package main

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Defaults of the hook's "config" object.
const (
	// defaultTable is RT_TABLE_MAIN, the table `ip route` shows.
	defaultTable = 254
	// defaultProtocol marks the routes this hook owns. 73 is in no
	// /etc/iproute2/rt_protos, no rt_protos.d file of FRR or BIRD, and not
	// in linux/rtnetlink.h; `ip route show proto 73` lists ikto's routes.
	defaultProtocol = 73
)

// Tables the kernel fills itself: a route of ours there would shadow or be
// shadowed by the kernel's own bookkeeping.
const (
	tableUnspec = 0
	tableLocal  = 255
)

// reservedProtocols are the route protocol numbers linux/rtnetlink.h assigns.
// Owning one of them would make Apply delete another daemon's routes on the
// device, so the config may not pick them.
var reservedProtocols = map[int]string{
	0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static",
	8: "gated", 9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted",
	14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived",
	42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip",
	192: "eigrp",
}

// config is the hook's own "config" object in the agent's hooks list:
//
//	{"table": 100, "metric": 50, "protocol": 73}
type config struct {
	// Table is the routing table the routes go to (default 254, main).
	Table int `json:"table"`
	// Metric is the routes' priority; nil leaves the kernel's default (0 for
	// IPv4, 1024 for IPv6).
	Metric *int `json:"metric"`
	// Protocol is the rtm_protocol that marks a route as this hook's.
	Protocol int `json:"protocol"`
}

// parseConfig decodes and validates raw (nil or empty means all defaults).
// Unknown keys are an error that names them, as in the agent's own config.
func parseConfig(raw json.RawMessage) (config, error) {
	cfg := config{Table: defaultTable, Protocol: defaultProtocol}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return config{}, fmt.Errorf("route hook config: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return config{}, fmt.Errorf("route hook config: %w", err)
	}
	return cfg, nil
}

func (c config) validate() error {
	switch {
	case c.Table == tableUnspec || c.Table == tableLocal:
		return fmt.Errorf("table: %d is reserved by the kernel; use 254 (main) or a table of your own (1-252, 256-%d)", c.Table, uint32(math.MaxUint32))
	case c.Table < 0 || int64(c.Table) > math.MaxUint32:
		return fmt.Errorf("table: %d is out of range 1-%d", c.Table, uint32(math.MaxUint32))
	case c.Metric != nil && (*c.Metric < 0 || int64(*c.Metric) > math.MaxUint32):
		return fmt.Errorf("metric: %d is out of range 0-%d", *c.Metric, uint32(math.MaxUint32))
	case c.Protocol < 0 || c.Protocol > math.MaxUint8:
		return fmt.Errorf("protocol: %d is out of range 5-255", c.Protocol)
	}
	if name, ok := reservedProtocols[c.Protocol]; ok {
		return fmt.Errorf("protocol: %d is %q in linux/rtnetlink.h and its routes are not ikto's; leave it out for the default %d or pick an unassigned number", c.Protocol, name, defaultProtocol)
	}
	return nil
}

// priority is the metric the kernel reports for a route of family v6 added
// with this config: IPv6 turns 0 into 1024 (IP6_RT_PRIO_USER), so comparing
// against the normalised value keeps repeated Applies from seeing a change.
func (c config) priority(v6 bool) int {
	m := 0
	if c.Metric != nil {
		m = *c.Metric
	}
	if v6 && m == 0 {
		return 1024
	}
	return m
}
