package hook

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
	"github.com/ikto-mesh/ikto/pkg/retry"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// testHook is one recorder hook of a test host.
type testHook struct {
	name    string
	timeout string
	sha256  string
	dir     string // where it records and takes orders
}

// testHost is a Host running the recorder hooks, stopped by t.Cleanup.
type testHost struct {
	*Host
	hooks   map[string]*testHook
	metrics Metrics
	logs    *logbuf.Buffer
	cancel  context.CancelFunc
	done    chan error
}

var testNode = sdk.Node{
	Self:         sdktest.Peer(0),
	Mesh:         netip.MustParsePrefix("fd10::/16"),
	Device:       "wgtest0",
	ListenPort:   51820,
	AgentVersion: "test",
}

// startHost runs a Host with hooks (each gets its own directory) until the
// test ends. Cleanup stops it, checks that Run returned, and kills by PID
// any hook process still there so a failing test leaves nothing behind.
func startHost(t *testing.T, hooks ...*testHook) *testHost {
	t.Helper()
	th := &testHost{hooks: map[string]*testHook{}, logs: &logbuf.Buffer{}, done: make(chan error, 1)}
	th.metrics = Metrics{
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f"}, []string{"hook"}),
		Restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"hook"}),
		Up:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "u"}, []string{"hook"}),
	}
	var cfgs []config.Hook
	for _, h := range hooks {
		h.dir = t.TempDir()
		th.hooks[h.name] = h
		hc := config.HookConfig{Name: h.name, Path: recorderPath, SHA256: h.sha256, Timeout: h.timeout, Config: hooktest.Config(h.dir)}
		cfgs = append(cfgs, resolveHook(t, hc))
	}
	log := slog.New(slog.NewTextHandler(th.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	th.Host = New(cfgs, testNode, Options{
		Log: log, Metrics: th.metrics, Grace: 2 * time.Second,
		Backoff: retry.Policy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	ctx, cancel := context.WithCancel(context.Background())
	th.cancel = cancel
	go func() { th.done <- th.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-th.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of cancel")
		}
		for _, h := range th.hooks {
			for _, pid := range pids(t, h.dir) {
				if hooktest.Alive(pid) {
					t.Errorf("hook %s: process %d still there after Run returned", h.name, pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if t.Failed() {
			t.Logf("host log:\n%s", th.logs.String())
		}
	})
	return th
}

// stop cancels Run and waits for it to return.
func (th *testHost) stop(t *testing.T) {
	t.Helper()
	th.cancel()
	select {
	case err := <-th.done:
		th.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
}

func (th *testHost) calls(t *testing.T, hook string) []hooktest.Call {
	t.Helper()
	return hooktest.Calls(t, th.hooks[hook].dir)
}

func (th *testHost) failures(hook string) float64 {
	return testutil.ToFloat64(th.metrics.Failures.WithLabelValues(hook))
}

func (th *testHost) restarts(hook string) float64 {
	return testutil.ToFloat64(th.metrics.Restarts.WithLabelValues(hook))
}

func (th *testHost) up(hook string) float64 {
	return testutil.ToFloat64(th.metrics.Up.WithLabelValues(hook))
}

// pids is every process that recorded a call in dir, in order of appearance.
func pids(t *testing.T, dir string) []int {
	t.Helper()
	var out []int
	seen := map[int]bool{}
	for _, c := range hooktest.Calls(t, dir) {
		if !seen[c.PID] {
			seen[c.PID] = true
			out = append(out, c.PID)
		}
	}
	return out
}

// lastApply is the newest apply call served (not failed) by pid (any pid if
// 0), or nil.
func lastApply(calls []hooktest.Call, pid int) *hooktest.Call {
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		if c.Op == "apply" && c.Act == "" && (pid == 0 || c.PID == pid) {
			return &c
		}
	}
	return nil
}

// waitTimeout bounds every wait on a hook: generous, since a restart
// includes backoff and a process start on a loaded machine.
const waitTimeout = 20 * time.Second

// resolveHook is hc as the agent would hand it over, after config.Resolve.
func resolveHook(t *testing.T, hc config.HookConfig) config.Hook {
	t.Helper()
	h := config.Hook{Name: hc.Name, Path: hc.Path, Timeout: config.DefaultHookTimeout, Config: hc.Config}
	if hc.SHA256 != "" {
		sum, err := hex.DecodeString(hc.SHA256)
		if err != nil {
			t.Fatalf("sha256 %q: %v", hc.SHA256, err)
		}
		h.SHA256 = sum
	}
	if hc.Timeout != "" {
		d, err := time.ParseDuration(hc.Timeout)
		if err != nil {
			t.Fatalf("timeout %q: %v", hc.Timeout, err)
		}
		h.Timeout = d
	}
	return h
}
