package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// RestartConfig sizes the restart scenario: per backend, Restarts agent
// restarts (SIGTERM, start again) with pings at 20/s each way.
type RestartConfig struct {
	Restarts int
}

// restartPing is 20 echo requests a second.
const restartPing = 50 * time.Millisecond

// restartWait bounds the wait for pings after a restart. An embedded device
// comes back empty and both ends must handshake again, which WireGuard may
// hold back 5 s after a failed attempt.
const restartWait = 30 * time.Second

// The backends measured, as the host that restarts runs them.
const (
	restartEmbedded = "embedded wireguard-go (userspace)"
	restartUnit     = "embedded wireguard-go under the unit (its TUN in the fd store)"
	restartReplace  = "embedded wireguard-go, without systemd, upgraded with --replace"
	restartExternal = "external wireguard-go, adopted"
	restartKernel   = "kernel WireGuard"
)

// Restart measures what an agent restart costs traffic between another host
// and the restarted one, per backend: echo requests lost (both directions
// added) and the longest time without a reply. The kernel backend is
// measured where the kernel can make a wireguard link (the kernel lane);
// elsewhere it is reported as not measured.
func Restart(ctx context.Context, bins *Binaries, rc RestartConfig, log *slog.Logger) ([]Figure, error) {
	backends := []string{restartEmbedded, restartUnit, restartReplace, restartExternal, restartKernel}
	var figs []Figure
	for _, b := range backends {
		if b == restartKernel {
			if err := harness.KernelWireGuard(); err != nil {
				f := NewFigure("restart", "pings lost across an agent restart, "+b, "pings", nil, nil)
				f.Note = "not measured here: " + err.Error() + "; make test-kernel measures it (TestRestartLosesNoPacket)"
				figs = append(figs, f)
				continue
			}
		}
		lost, gaps, err := restartBackend(ctx, bins, b, rc, log)
		if err != nil {
			return figs, fmt.Errorf("%s: %w", b, err)
		}
		figs = append(figs,
			NewFigure("restart", "pings lost across an agent restart, "+b, "pings", lost, nil),
			NewFigure("restart", "longest gap between replies across it, "+b, "ms", gaps, nil))
	}
	return figs, nil
}

// restartBackend runs hosts a (embedded device, never restarted) and b (the
// backend under test) and restarts b's agent rc.Restarts times.
func restartBackend(ctx context.Context, bins *Binaries, backend string, rc RestartConfig, log *slog.Logger) (lost, gaps []float64, err error) {
	w, err := newWorld(harness.NetworkOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer func() { err = errors.Join(err, w.close()) }()
	a, err := w.net.AddHost("a")
	if err != nil {
		return nil, nil, err
	}
	b, err := w.net.AddHost("b")
	if err != nil {
		return nil, nil, err
	}
	const bucket = "restart"
	cfgA := a.Config(w.nats.URL(), bucket)
	cfgA.WGBackend = string(wgdev.KindUserspace)
	cfgB := b.Config(w.nats.URL(), bucket)
	var sm *harness.ServiceManager // the unit's service manager, for restartUnit
	switch backend {
	case restartEmbedded, restartReplace:
		cfgB.WGBackend = string(wgdev.KindUserspace)
	case restartUnit:
		cfgB.WGBackend = string(wgdev.KindUserspace)
		if sm, err = b.NewServiceManager(); err != nil {
			return nil, nil, err
		}
	case restartExternal:
		if _, err := b.StartExternalDevice(ctx); err != nil {
			return nil, nil, err
		}
		cfgB.WGBackend = string(wgdev.KindAuto)
	case restartKernel:
		cfgB.WGBackend = string(wgdev.KindKernel)
	}
	agentA, err := a.StartAgent(bins.Binaries, cfgA)
	if err != nil {
		return nil, nil, err
	}
	agent, err := b.StartAgentUnder(sm, bins.Binaries, cfgB)
	if err != nil {
		return nil, nil, err
	}
	hosts := []*harness.Host{a, b}
	if err := waitMeshed(ctx, hosts); err != nil {
		return nil, nil, withLogs(err, agentA, agent)
	}
	for i := range rc.Restarts {
		n, gap, next, err := restartOnce(ctx, bins, sm, backend == restartReplace, agent, cfgB, hosts, i+1)
		if err != nil {
			if next != nil {
				agent = next
			}
			return nil, nil, withLogs(fmt.Errorf("restart %d: %w", i+1, err), agentA, agent)
		}
		agent = next
		lost = append(lost, float64(n))
		gaps = append(gaps, float64(gap.Milliseconds()))
		log.Info("restart", "backend", backend, "n", i+1, "lost", n, "longest_gap", gap)
	}
	return lost, gaps, nil
}

// withLogs adds the agents' last log lines to a failure, which is all a
// run in the kernel lane leaves to read.
func withLogs(err error, agents ...*harness.Agent) error {
	for _, a := range agents {
		err = fmt.Errorf("%w\n--- %s, last lines:\n%s", err, a.Name, a.LogTail(30))
	}
	return err
}

// waitMeshed waits until both devices list each other and a pings b.
func waitMeshed(ctx context.Context, hosts []*harness.Host) error {
	return testkit.Poll(ctx, restartWait, func(ctx context.Context) error {
		if err := harness.CheckMesh(hosts); err != nil {
			return err
		}
		_, err := hosts[0].Ping(ctx, hosts[1].PrivateAddress)
		return err
	})
}

// restartOnce pings both ways, restarts b's agent (SIGTERM, start again;
// with replace, a new agent started with --replace, which stops the old
// one), waits until pings flow again for a second, and returns the echo
// requests lost in both directions and the longer of the two longest gaps.
func restartOnce(ctx context.Context, bins *Binaries, sm *harness.ServiceManager, replace bool, agent *harness.Agent, cfg config.Config, hosts []*harness.Host, n int) (int, time.Duration, *harness.Agent, error) {
	a, b := hosts[0], hosts[1]
	// A log per run: ping's log file is appended to, never truncated.
	there, err := a.StartPinger(fmt.Sprintf("ping-b-%d", n), b.PrivateAddress, restartPing)
	if err != nil {
		return 0, 0, nil, err
	}
	back, err := b.StartPinger(fmt.Sprintf("ping-a-%d", n), a.PrivateAddress, restartPing)
	if err != nil {
		return 0, 0, nil, err
	}
	pingers := []*harness.Pinger{there, back}
	for _, p := range pingers {
		if err := p.WaitReplies(ctx, 20, restartWait); err != nil {
			return 0, 0, nil, err
		}
	}
	var next *harness.Agent
	if replace {
		if next, err = b.StartAgent(bins.Binaries, cfg, "--replace"); err != nil {
			return 0, 0, nil, err
		}
	} else if err := agent.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, restartWait)
	code, err := agent.Wait(wctx)
	cancel()
	if err != nil {
		return 0, 0, next, err
	}
	if code != 0 {
		return 0, 0, next, fmt.Errorf("the agent restarted exited %d, want 0", code)
	}
	if !replace {
		if next, err = b.StartAgentUnder(sm, bins.Binaries, cfg); err != nil {
			return 0, 0, nil, err
		}
	}
	if err := waitMeshed(ctx, hosts); err != nil {
		return 0, 0, next, err
	}
	for _, p := range pingers {
		if err := p.WaitReplies(ctx, 20, restartWait); err != nil {
			return 0, 0, next, err
		}
	}
	lost, gap := 0, time.Duration(0)
	for _, p := range pingers {
		rep, err := p.Stop()
		if err != nil {
			return 0, 0, nil, err
		}
		lost += len(rep.Lost)
		gap = max(gap, rep.LongestGap)
	}
	return lost, gap, next, nil
}
