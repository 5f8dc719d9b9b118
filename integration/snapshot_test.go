package integration_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// An agent restarted while NATS is down brings its userspace device back
// with its peers from the snapshot in state_dir, and traffic flows before
// NATS returns; then it claims, syncs, and follows later changes.
func TestRestartWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie")
	withState := func(h *harness.Host) config.Config {
		cfg := m.config(h)
		cfg.StateDir = filepath.Join(h.Dir, "state")
		return cfg
	}
	for _, h := range hosts {
		m.startWith(h, withState(h))
	}
	m.waitConverged(hosts)
	bravo := hosts[1]
	snapshot := filepath.Join(bravo.Dir, "state", bravo.DevName+".json")
	testkit.Eventually(t, convergeTimeout, "bravo's snapshot", func() error {
		st, err := os.Stat(snapshot)
		if err != nil {
			return err
		}
		if st.Mode().Perm() != 0o600 {
			return testkit.Permanent(errors.New("snapshot mode is " + st.Mode().String() + ", want -rw-------"))
		}
		return nil
	})

	m.nats.Shutdown()
	old := m.agents[bravo.Name]
	if err := old.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, old); code != 0 {
		t.Fatalf("bravo's agent exited %d on SIGTERM, want 0", code)
	}
	// An embedded userspace device went with its agent: what comes back is
	// the snapshot's. A kernel device stays, with its peers.
	if harness.TestBackend() == wgdev.KindKernel {
		if err := harness.CheckDevice(bravo, hosts); err != nil {
			t.Fatalf("bravo's kernel device after its agent stopped: %v", err)
		}
	} else if _, err := bravo.DeviceView(); err == nil {
		t.Fatal("bravo's device outlived its agent")
	}

	restarted := time.Now()
	a := m.startWith(bravo, withState(bravo))
	testkit.Eventually(t, convergeTimeout, "bravo's peers restored while NATS is down", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return harness.CheckDevice(bravo, hosts)
	})
	t.Logf("bravo's device had its peers back %s after its agent started, NATS down", time.Since(restarted).Round(time.Millisecond))
	m.pingAll(hosts)
	t.Logf("all pairs ping %s after bravo's agent started, NATS down", time.Since(restarted).Round(time.Millisecond))
	if m.nats.Running() {
		t.Fatal("NATS is running: the restore proved nothing")
	}
	if !strings.Contains(a.Logs(), "restored the mesh from the snapshot") {
		t.Errorf("bravo's agent does not say it restored its mesh:\n%s", a.LogTail(20))
	}

	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	hosts = m.joinWith(hosts, "delta", withState)
	testkit.EventuallyContext(t, convergeTimeout, "bravo's status after NATS returned", func(ctx context.Context) error {
		return checkStatus(ctx, bravo, len(hosts)-1)
	})
}
