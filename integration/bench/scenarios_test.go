package bench

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// figure finds the figure whose name contains name, or fails.
func figure(t *testing.T, figs []Figure, name string) Figure {
	t.Helper()
	for _, f := range figs {
		if strings.Contains(f.Name, name) {
			return f
		}
	}
	t.Fatalf("no figure %q among %d", name, len(figs))
	return Figure{}
}

// wantSamples checks that a figure holds n positive samples.
func wantSamples(t *testing.T, f Figure, n int) {
	t.Helper()
	if f.Samples != n || f.Min <= 0 {
		t.Errorf("%s: %d samples, min %v; want %d positive", f.Name, f.Samples, f.Min, n)
	}
}

// TestPropagation runs the scenario at a small size, with and without light
// watchers: real agents, a real nats-server in a child process. The scenario
// itself fails unless every agent applied every put and every delete and
// holds every other host.
func TestPropagation(t *testing.T) {
	tests := []struct {
		name              string
		hosts, full, runs int
	}{
		{"full agents only", 12, 0, 3},
		{"with light watchers", 20, 5, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			figs, err := Propagation(ctx, PropagationConfig{Hosts: tt.hosts, Full: tt.full, Rounds: tt.runs, TargetP99: 1000}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			full := tt.full
			if full == 0 {
				full = tt.hosts
			}
			wantSamples(t, figure(t, figs, "put → applied on every agent"), tt.runs)
			wantSamples(t, figure(t, figs, "put → applied, each agent"), tt.runs*full)
			wantSamples(t, figure(t, figs, "delete → removed on every agent"), tt.runs)
			if tt.full > 0 {
				wantSamples(t, figure(t, figs, "received by every watcher"), tt.runs)
			}
			// The floor's messages are a put and a delete per round.
			wantSamples(t, figure(t, figs, "received by all N plain subscribers"), 2*tt.runs)
		})
	}
}

// TestScenariosInNamespaces runs every scenario that needs root at the
// smallest size that still exercises it: real ikto-agent and
// ikto-bench-agent processes, userspace WireGuard devices, iperf3 and
// wireguard-go. It checks what was measured, never how fast.
func TestScenariosInNamespaces(t *testing.T) {
	harnesstest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bins, err := BuildBinaries(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := testLog(t)
	t.Run("sync", func(t *testing.T) {
		figs, err := InitialSync(ctx, bins, []SyncVariant{
			{Device: "fake", Records: 50, Runs: 2},
			{Device: "userspace", Records: 50, Runs: 1},
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		wantSamples(t, figure(t, figs, "join → device configured, 50 peers, in-memory"), 2)
		wantSamples(t, figure(t, figs, "agent peak RSS, 50 peers, userspace"), 1)
		wantSamples(t, figure(t, figs, "agent Go heap (live), 50 peers, userspace"), 1)
	})
	t.Run("idle", func(t *testing.T) {
		figs, err := IdleCost(ctx, bins, IdleConfig{Peers: 20, Window: time.Second, Windows: 2}, log)
		if err != nil {
			t.Fatal(err)
		}
		wantSamples(t, figure(t, figs, "CPU per 1s window"), 2)
		wantSamples(t, figure(t, figs, "agent peak RSS, 20 peers"), 1)
	})
	t.Run("mesh", func(t *testing.T) {
		figs, err := Mesh(ctx, bins, MeshConfig{Hosts: 3, Launches: 2, Joins: 1, Restarts: 1}, log)
		if err != nil {
			t.Fatal(err)
		}
		wantSamples(t, figure(t, figs, "launch → every device lists every peer"), 2)
		wantSamples(t, figure(t, figs, "pre-started (as 0.3.0's harness): launch → every device lists every peer"), 2)
		for _, p := range launchPhases {
			wantSamples(t, figure(t, figs, "launch → an agent "+p.what), 6)
		}
		wantSamples(t, figure(t, figs, "launch → a pair answers ping, each"), 12)
		wantSamples(t, figure(t, figs, "claim → on every device"), 1)
		wantSamples(t, figure(t, figs, "agent peak RSS"), 3)
	})
	t.Run("dataplane", func(t *testing.T) {
		figs, err := DataPlane(ctx, bins, DataPlaneConfig{Rounds: 2, Seconds: time.Second}, log)
		if errors.Is(err, harness.ErrMissingPrerequisite) && os.Getenv(harnesstest.RequireEnv) != "1" {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{pathUnderlay, pathIkto, pathHand} {
			wantSamples(t, figure(t, figs, path), 2)
		}
		wantSamples(t, figure(t, figs, "ikto / hand-configured"), 2)
	})
}

// TestRestartScenario restarts an agent once per backend with pings running
// both ways and checks that each backend was measured. The kernel backend
// is measured where the kernel has WireGuard, and must be in the kernel
// lane (IKTO_TEST_WG_BACKEND=kernel), which runs this test and prints the
// figures it logs.
func TestRestartScenario(t *testing.T) {
	harnesstest.Require(t)
	if _, err := exec.LookPath("wireguard-go"); err != nil {
		if os.Getenv(harnesstest.RequireEnv) == "1" {
			t.Fatal("wireguard-go not in PATH (apt-get install wireguard-go)")
		}
		t.Skip("wireguard-go not in PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hb, err := harness.BuildBinaries(ctx, t.TempDir(), harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	figs, err := Restart(ctx, &Binaries{Binaries: hb}, RestartConfig{Restarts: 1}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range figs {
		if f.Samples == 0 {
			t.Logf("figure: %s: not measured: %s", f.Name, f.Note)
			continue
		}
		t.Logf("figure: %s: %s %s", f.Name, formatNumber(f.Median), f.Unit)
	}
	for _, b := range []string{restartEmbedded, restartUnit, restartExternal, restartKernel} {
		lost := figure(t, figs, "pings lost across an agent restart, "+b)
		if b == restartKernel && lost.Samples == 0 {
			if os.Getenv(harness.BackendEnv) == "kernel" {
				t.Errorf("the kernel backend was not measured in a kernel run: %s", lost.Note)
			} else if lost.Note == "" {
				t.Error("the kernel backend was not measured and the note does not say why")
			}
			continue
		}
		if lost.Samples != 1 {
			t.Errorf("%s: %d samples, want 1", lost.Name, lost.Samples)
		}
		if gap := figure(t, figs, "longest gap between replies across it, "+b); gap.Samples != 1 || gap.Min <= 0 {
			t.Errorf("%s: %d samples, min %v; want 1 positive", gap.Name, gap.Samples, gap.Min)
		}
	}
}
