package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
)

// A real hook process learns the node, gets the mesh after the device is
// configured, sees a host join, and is stopped and gone when the agent stops.
func TestHookSeesTheMesh(t *testing.T) {
	s := natstest.Start(t)
	kv := openBucket(t, s.URL())
	early := putPeer(t, kv, "fd10:2::/48")

	dir := t.TempDir()
	cfg := newConfig(t, s.URL(), "fd10:1::/48")
	cfg.Hooks = []config.HookConfig{{Name: "rec", Path: hooktest.Build(t, t.TempDir()), Config: hooktest.Config(dir)}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg, nil)
	h.waitReady(t)

	// applied reports whether the hook's newest apply carries exactly prefixes.
	applied := func(prefixes ...string) bool {
		calls := hooktest.Calls(t, dir)
		for i := len(calls) - 1; i >= 0; i-- {
			if c := calls[i]; c.Op == "apply" {
				if len(c.Change.Peers) != len(prefixes) {
					return false
				}
				for j, p := range prefixes {
					if c.Change.Peers[j].Prefix != netip.MustParsePrefix(p) {
						return false
					}
				}
				return true
			}
		}
		return false
	}
	testkit.Eventually(t, waitTimeout, "the hook to get the first peer", testkit.True(func() bool { return applied("fd10:2::/48") }))
	calls := hooktest.Calls(t, dir)
	node := calls[0].Node
	if calls[0].Op != "configure" || node.Self.Prefix != netip.MustParsePrefix("fd10:1::/48") || node.Device != cfg.WGDevName ||
		node.Mesh != settings(t, cfg).Mesh || node.Self.Endpoint != netip.MustParseAddrPort("198.18.0.10:51820") {
		t.Fatalf("first call = %+v node %+v, want configure with this host", calls[0], node)
	}
	first := calls[1].Change
	if len(first.Added) != 1 || first.Added[0].PublicKey != early.String() || first.Added[0].Endpoint != netip.MustParseAddrPort("198.18.0.20:51820") {
		t.Fatalf("first apply = %+v, want fd10:2::/48 added with its key and endpoint", first)
	}

	joined := putPeer(t, kv, "fd10:5::/48")
	testkit.Eventually(t, waitTimeout, "the join to reach the hook", testkit.True(func() bool { return applied("fd10:2::/48", "fd10:5::/48") }))
	var sawJoin bool
	for _, c := range hooktest.Calls(t, dir) {
		if c.Op == "apply" && len(c.Change.Added) == 1 && c.Change.Added[0].PublicKey == joined.String() {
			sawJoin = true
		}
	}
	if !sawJoin {
		t.Error("no apply had the joined host in Added")
	}
	body, err := api.NewClient(h.socket).Get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`ikto_hook_up{hook="rec"} 1`, `ikto_hook_failures_total{hook="rec"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	h.cancel()
	if err := h.waitExit(t); err != nil {
		t.Fatalf("agent: %v", err)
	}
	calls = hooktest.Calls(t, dir)
	if last := calls[len(calls)-1]; last.Op != "stop" {
		t.Errorf("last call = %s, want stop", last.Op)
	}
	for _, c := range calls {
		if hooktest.Alive(c.PID) {
			t.Errorf("hook process %d alive after the agent stopped", c.PID)
		}
	}
}
