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
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// The route hook's table and protocol in these tests (protocol 73 is the
// hook's default; the table is not main so the checks see only its routes).
const (
	hookRouteTable = 100
	hookRouteProto = 73
)

func TestHooksRouteFirewallExec(t *testing.T) {
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie", "delta")
	outsider := m.addHosts("outsider")[0]
	for _, h := range hosts[:3] {
		m.startWith(h, withHooks(t, m.bins, h, m.config(h)))
	}
	m.waitHooksConverged(hosts[:3])

	// The exec hook got JSON that lists the peers.
	alpha := hosts[0]
	testkit.Eventually(t, convergeTimeout, "the exec hook's payload to list bravo and charlie", func() error {
		raw, err := os.ReadFile(filepath.Join(alpha.Dir, "exec-payload.json"))
		if err != nil {
			return err
		}
		var payload struct {
			Node struct {
				AllowedIP string `json:"allowed_ip"`
			} `json:"node"`
			Peers []struct {
				Name      string `json:"name"`
				PublicKey string `json:"public_key"`
				AllowedIP string `json:"allowed_ip"`
			} `json:"peers"`
		}
		if err := json.Unmarshal(raw, &payload); err != nil {
			return fmt.Errorf("exec payload is not JSON: %w: %q", err, raw)
		}
		var got []string
		for _, p := range payload.Peers {
			got = append(got, p.Name+" "+p.PublicKey+" "+p.AllowedIP)
		}
		want := []string{}
		for _, h := range hosts[1:3] {
			want = append(want, h.Name+" "+h.PublicKey.String()+" "+h.Prefix().String())
		}
		slices.Sort(got)
		if d := cmp.Diff(want, got); d != "" || payload.Node.AllowedIP != alpha.Prefix().String() {
			return fmt.Errorf("exec payload node %q peers (-want +got):\n%s", payload.Node.AllowedIP, d)
		}
		return nil
	})

	// Members handshake through the firewall; a non-member is dropped.
	m.pingAll(hosts[:3])
	before := mustCounter(t, alpha, "wg_port_drops")
	const probes = 5
	for range probes {
		if _, err := outsider.Exec(context.Background(), "bash", "-c",
			fmt.Sprintf("echo probe > /dev/udp/%s/51820", alpha.Addr)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.EventuallyContext(t, convergeTimeout, "the outsider's probes counted as drops", func(ctx context.Context) error {
		n, err := nftCounter(ctx, alpha, "wg_port_drops")
		if err != nil {
			return err
		}
		if n < before+probes {
			return fmt.Errorf("wg_port_drops %d, want at least %d", n, before+probes)
		}
		return nil
	})

	// A fourth host shows up in devices, routes and sets together.
	m.startWith(hosts[3], withHooks(t, m.bins, hosts[3], m.config(hosts[3])))
	m.waitHooksConverged(hosts)
	// alpha answers delta's first handshake; it gives delta its endpoint
	// once it sees that handshake, which may come seconds later on a slow
	// machine (the kernel lane's emulated CPU). That is not what the hook
	// restart below may cause, so it must be over first.
	waitEndpointLogged(t, m.agents[alpha.Name], hosts[3])

	// kill -9 of alpha's route hook: the agent restarts it and the routes are
	// right again (a route deleted by hand meanwhile comes back), while the
	// device is not touched.
	devBefore, err := alpha.DeviceView()
	if err != nil {
		t.Fatal(err)
	}
	agent := m.agents[alpha.Name]
	oldPID, err := hookPID(agent, harness.RouteHookBinary)
	if err != nil {
		t.Fatal(err)
	}
	logBefore := len(agent.Logs())
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := alpha.Exec(context.Background(), "ip", "-6", "route", "del", hosts[1].Prefix().String(),
		"table", strconv.Itoa(hookRouteTable), "dev", alpha.DevName); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyContext(t, convergeTimeout, "a new route hook with the routes restored", func(ctx context.Context) error {
		pid, err := hookPID(agent, harness.RouteHookBinary)
		if err != nil {
			return err
		}
		if pid == oldPID {
			return fmt.Errorf("route hook still has PID %d", pid)
		}
		return checkHooks(ctx, alpha, hosts)
	})
	devAfter, err := alpha.DeviceView()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(devBefore, devAfter); d != "" {
		t.Errorf("alpha's device changed while its route hook restarted (-before +after):\n%s", d)
	}
	for _, line := range strings.Split(agent.Logs()[logBefore:], "\n") {
		if strings.Contains(line, "peer added") || strings.Contains(line, "peer removed") || strings.Contains(line, "peer updated") {
			t.Errorf("alpha's agent changed a peer while its route hook restarted: %s", line)
		}
	}

	// Evicting delta takes it out of every device, route table and set.
	cfgPath, err := alpha.WriteConfig(m.config(alpha))
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runAdmin(t, m.bins, "-c", cfgPath, "evict", hosts[3].Prefix().Addr().String()); code != 0 {
		t.Fatalf("evict delta exited %d:\n%s%s", code, stdout, stderr)
	}
	if code := waitExit(t, m.agents[hosts[3].Name]); code != 4 {
		t.Errorf("evicted delta exited %d, want 4", code)
	}
	m.waitHooksConverged(hosts[:3])
}

// A hook stuck in a call until its timeout neither holds up the device nor
// the other hooks: bravo's join reaches alpha's device and routes while the
// slow hook has not yet failed its first call.
func TestHookTimeoutDelaysNothing(t *testing.T) {
	m := newMesh(t)
	hs := m.addHosts("alpha", "bravo")
	alpha, bravo := hs[0], hs[1]
	cfg := withHooks(t, m.bins, alpha, m.config(alpha))
	execPath, err := m.bins.Path(harness.ExecHookBinary)
	if err != nil {
		t.Fatal(err)
	}
	slowCfg, _ := json.Marshal(map[string]any{"command": []string{"/bin/sleep", "600"}, "timeout": "10m"})
	cfg.Hooks = append(cfg.Hooks[:1], config.HookConfig{Name: "slow", Path: execPath, Timeout: "20s", Config: slowCfg})
	m.startWith(alpha, cfg)
	testkit.EventuallyContext(t, convergeTimeout, "the slow hook to be up", func(ctx context.Context) error {
		v, err := metricValue(ctx, alpha.SocketPath, `ikto_hook_up{hook="slow"}`)
		if err == nil && v != 1 {
			err = fmt.Errorf("ikto_hook_up{hook=\"slow\"} = %v", v)
		}
		return err
	})

	m.start(bravo)
	testkit.EventuallyContext(t, convergeTimeout, "bravo on alpha's device and in its routes", func(ctx context.Context) error {
		if err := harness.CheckDevice(alpha, []*harness.Host{alpha, bravo}); err != nil {
			return err
		}
		routes, err := hookRoutes(ctx, alpha)
		if err != nil {
			return err
		}
		if !slices.Equal(routes, []string{bravo.Prefix().String()}) {
			return fmt.Errorf("routes on alpha: %v", routes)
		}
		return nil
	})
	failures, err := metricValue(context.Background(), alpha.SocketPath, `ikto_hook_failures_total{hook="slow"}`)
	if err != nil && !strings.Contains(err.Error(), "no series") {
		t.Fatal(err)
	}
	if failures != 0 {
		t.Fatalf("the slow hook had already failed %v times; this run shows nothing about delays", failures)
	}

	// The stuck call does end: it times out, is counted, and the hook restarts.
	testkit.EventuallyContext(t, 60*time.Second, "the slow hook's call to time out", func(ctx context.Context) error {
		v, err := metricValue(ctx, alpha.SocketPath, `ikto_hook_failures_total{hook="slow"}`)
		if err == nil && v < 1 {
			err = fmt.Errorf("ikto_hook_failures_total{hook=\"slow\"} = %v", v)
		}
		return err
	})
	if code, ok := m.agents[alpha.Name].ExitCode(); ok {
		t.Fatalf("alpha exited with %d", code)
	}
}

// waitEndpointLogged waits until agent has logged peer h with its endpoint:
// its first contact with h is over, and no later pass changes h for it.
func waitEndpointLogged(t *testing.T, agent *harness.Agent, h *harness.Host) {
	t.Helper()
	want := "endpoint=" + h.ExpectedView().Endpoint
	testkit.Eventually(t, convergeTimeout, h.Name+"'s endpoint in the log of "+agent.Host.Name, func() error {
		for _, line := range strings.Split(agent.Logs(), "\n") {
			if strings.Contains(line, "peer="+h.Name+" ") && strings.Contains(line, want) &&
				(strings.Contains(line, "peer added") || strings.Contains(line, "peer updated")) {
				return nil
			}
		}
		return fmt.Errorf("no line of %s with %s", h.Name, want)
	})
}

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
