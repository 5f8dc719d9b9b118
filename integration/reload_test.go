package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// TestSIGHUPReloadsTheConfig changes a running agent's config and sends it
// SIGHUP, as `systemctl reload` does: the new log level and a new hook apply
// at once, a field that needs a restart (wg_port) is named in the log and
// keeps its running value, and the agent and the mesh carry on.
func TestSIGHUPReloadsTheConfig(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.ExecHookBinary)
	hosts := m.addHosts("alpha", "bravo")
	alpha := hosts[0]
	cfg := m.config(alpha)
	cfg.LogLevel = "info"
	agent := harnesstest.StartAgent(t, m.bins, alpha, cfg) // no --log-level: the config's applies
	m.agents[alpha.Name] = agent
	m.start(hosts[1])
	m.waitConverged(hosts)
	if strings.Contains(agent.Logs(), "level=DEBUG") {
		t.Fatal("the agent logs at debug level before the reload")
	}

	execPath, err := bins.Path(harness.ExecHookBinary)
	if err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(alpha.Dir, "reload-payload.json")
	execCfg, _ := json.Marshal(map[string]any{
		"command": []string{"/bin/sh", "-c", fmt.Sprintf("cat > %s.tmp && mv %s.tmp %s", payload, payload, payload)},
	})
	next := cfg
	next.LogLevel = "debug"
	next.WGPort = 51999
	next.Hooks = []config.HookConfig{{Name: "notify", Path: execPath, Config: execCfg}}
	if _, err := alpha.WriteConfig(next); err != nil {
		t.Fatal(err)
	}
	if err := agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, convergeTimeout, "the new hook to get the mesh", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		b, err := os.ReadFile(payload)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), hosts[1].PublicKey.String()) {
			return errors.New("the payload lacks bravo")
		}
		return nil
	})
	logs := agent.Logs()
	for _, want := range []string{"config reloaded", "applied=\"[hooks log_level]\"", "needs_restart=[wg_port]", "level=DEBUG"} {
		if !strings.Contains(logs, want) {
			t.Errorf("alpha's log lacks %q:\n%s", want, agent.LogTail(20))
		}
	}
	st, err := alpha.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.WGPort != cfg.WGPort || st.State != "synced" {
		t.Errorf("after the reload alpha says port %d, state %q; want the running %d, synced", st.Self.WGPort, st.State, cfg.WGPort)
	}
	m.waitConverged(hosts)
	m.pingAll(hosts)
}
