package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// withHooks is cfg with the route, firewall and exec hooks configured; the
// exec hook copies each payload it gets into h.Dir/exec-payload.json.
func withHooks(t *testing.T, bins *harness.Binaries, h *harness.Host, cfg config.Config) config.Config {
	t.Helper()
	path := func(name string) string {
		p, err := bins.Path(name)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	payload := filepath.Join(h.Dir, "exec-payload.json")
	execCfg, _ := json.Marshal(map[string]any{
		"command": []string{"/bin/sh", "-c", fmt.Sprintf("cat > %s.tmp && mv %s.tmp %s", payload, payload, payload)},
	})
	cfg.Hooks = []config.HookConfig{
		{Name: "route", Path: path(harness.RouteHookBinary), Config: json.RawMessage(fmt.Sprintf(`{"table": %d}`, hookRouteTable))},
		{Name: "firewall", Path: path(harness.FirewallHookBinary)},
		{Name: "exec", Path: path(harness.ExecHookBinary), Config: execCfg},
	}
	return cfg
}

// hookRoutes is the prefixes routed through h's device by the route hook.
func hookRoutes(ctx context.Context, h *harness.Host) ([]string, error) {
	out, err := h.Exec(ctx, "ip", "-j", "-6", "route", "show", "table", strconv.Itoa(hookRouteTable),
		"proto", strconv.Itoa(hookRouteProto), "dev", h.DevName)
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, fmt.Errorf("ip route on %s: %w: %q", h.Name, err, out)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.Dst)
	}
	slices.Sort(got)
	return got, nil
}

// nftSet is the elements of one set of the firewall hook's table on h, as
// text ("198.18.0.7", "fd10:1::/48").
func nftSet(ctx context.Context, h *harness.Host, set string) ([]string, error) {
	out, err := h.Exec(ctx, "nft", "-j", "list", "set", "inet", "ikto", set)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("nft list set %s on %s: %w", set, h.Name, err)
	}
	got := []string{}
	for _, item := range doc.Nftables {
		if item.Set == nil {
			continue
		}
		for _, e := range item.Set.Elem {
			var s string
			if json.Unmarshal(e, &s) == nil {
				got = append(got, s)
				continue
			}
			var p struct {
				Prefix struct {
					Addr string `json:"addr"`
					Len  int    `json:"len"`
				} `json:"prefix"`
			}
			if err := json.Unmarshal(e, &p); err != nil {
				return nil, fmt.Errorf("nft set %s on %s: element %s: %w", set, h.Name, e, err)
			}
			got = append(got, fmt.Sprintf("%s/%d", p.Prefix.Addr, p.Prefix.Len))
		}
	}
	slices.Sort(got)
	return got, nil
}

// nftCounter is the packet count of a named counter of the hook's table.
func nftCounter(ctx context.Context, h *harness.Host, name string) (int, error) {
	out, err := h.Exec(ctx, "nft", "-j", "list", "counter", "inet", "ikto", name)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets int `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("nft counter %s on %s: %w", name, h.Name, err)
	}
	for _, item := range doc.Nftables {
		if item.Counter != nil {
			return item.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("nft counter %s on %s: not found in %q", name, h.Name, out)
}

// checkHooks is nil when h's route table and firewall sets list exactly the
// other hosts of mesh.
func checkHooks(ctx context.Context, h *harness.Host, mesh []*harness.Host) error {
	var prefixes, endpoints []string
	for _, o := range mesh {
		if o != h {
			prefixes = append(prefixes, o.Prefix().String())
			endpoints = append(endpoints, o.Addr.String())
		}
	}
	slices.Sort(prefixes)
	slices.Sort(endpoints)
	routes, err := hookRoutes(ctx, h)
	if err != nil {
		return err
	}
	if d := cmp.Diff(prefixes, routes); d != "" {
		return fmt.Errorf("routes on %s (-want +got):\n%s", h.Name, d)
	}
	set, err := nftSet(ctx, h, "peer_prefixes")
	if err != nil {
		return err
	}
	if d := cmp.Diff(prefixes, set); d != "" {
		return fmt.Errorf("nft peer_prefixes on %s (-want +got):\n%s", h.Name, d)
	}
	set, err = nftSet(ctx, h, "peer_endpoints_v4")
	if err != nil {
		return err
	}
	if d := cmp.Diff(endpoints, set); d != "" {
		return fmt.Errorf("nft peer_endpoints_v4 on %s (-want +got):\n%s", h.Name, d)
	}
	return nil
}

// waitHooksConverged waits until every host's device, routes and sets list
// the others.
func (m *mesh) waitHooksConverged(hosts []*harness.Host) {
	m.t.Helper()
	testkit.EventuallyContext(m.t, convergeTimeout, "devices, routes and nft sets to converge", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if err := harness.CheckMesh(hosts); err != nil {
			return err
		}
		for _, h := range hosts {
			if err := checkHooks(ctx, h, hosts); err != nil {
				return err
			}
		}
		return nil
	})
}

// hookPID is the PID of the agent's child process running the hook binary.
func hookPID(a *harness.Agent, binary string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces; the fields after its ')' do not.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 2 || fields[1] != strconv.Itoa(a.PID) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && filepath.Base(exe) == binary {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process under agent %d", binary, a.PID)
}

func mustCounter(t *testing.T, h *harness.Host, name string) int {
	t.Helper()
	n, err := nftCounter(context.Background(), h, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
