package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ikto-mesh/ikto/integration/bench/agentstats"
	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// IdleConfig sizes the idle-cost scenario.
type IdleConfig struct {
	Peers   int           // records of other hosts in the bucket
	Window  time.Duration // one measurement window
	Windows int           // consecutive windows
}

// idleSettle lets the agent finish what follows its first sync (the first
// heartbeat, the garbage of the snapshot, the first contacts it starts,
// which end within 3 s) before the clock starts.
const idleSettle = 6 * time.Second

// IdleCost measures the CPU time one real ikto-agent process (userspace
// device, default resync period, heartbeats) uses while nothing changes in
// a bucket of Peers other hosts: Windows consecutive windows, read from the
// kernel's per-thread run times. Nothing reads the device or the socket
// during the windows: that would be work for the agent.
func IdleCost(ctx context.Context, bins *Binaries, ic IdleConfig, log *slog.Logger) (figs []Figure, err error) {
	w, err := newWorld(harness.NetworkOptions{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, w.close()) }()
	a, err := startSyncedAgent(ctx, w, bins, ic.Peers)
	if err != nil {
		return nil, err
	}
	pct, err := idleWindows(ctx, a, ic, log)
	if err != nil {
		return nil, err
	}
	mem, err := agentstats.ReadMemory(a.PID)
	if err != nil {
		return nil, err
	}
	total := 0.0
	for _, p := range pct {
		total += p
	}
	at := fmt.Sprintf("%s peers, userspace device", thousands(ic.Peers))
	over := NewFigure("idle", fmt.Sprintf("CPU over %s of no changes, %s", ic.Window*time.Duration(ic.Windows), at), "%", []float64{total / float64(len(pct))}, AtMost(StatMedian, 0.1)).withRef("≈ 0")
	over.Note = "% of one core"
	return []Figure{
		over,
		NewFigure("idle", fmt.Sprintf("CPU per %s window, %s", ic.Window, at), "%", pct, nil),
		NewFigure("idle", "agent peak RSS, "+at, "MB", []float64{mb(mem.PeakRSS)}, nil),
		NewFigure("idle", "agent RSS, anonymous (not the binary), "+at, "MB", []float64{mb(mem.AnonRSS)}, nil),
	}, nil
}

// startSyncedAgent fills a bucket with peers claims, starts a real agent
// (default resync period, as deployed) on a new host and waits until its
// device lists all of them.
func startSyncedAgent(ctx context.Context, w *world, bins *Binaries, peers int) (*harness.Agent, error) {
	h, fleet, err := w.joiner("idle")
	if err != nil {
		return nil, err
	}
	const bucket = "idle"
	if _, err := fillBucket(ctx, w, fleet, bucket, peers, false); err != nil {
		return nil, err
	}
	cfg := h.Config(w.nats.URL(), bucket)
	cfg.ResyncInterval = ""
	a, err := h.StartAgent(bins.Binaries, cfg)
	if err != nil {
		return nil, err
	}
	return a, testkit.Poll(ctx, time.Minute, func(context.Context) error {
		if err := exited(a)(); err != nil {
			return testkit.Permanent(err)
		}
		got, err := harness.DevicePeers(h.DevName)
		if err != nil {
			return err
		}
		if len(got) != peers {
			return fmt.Errorf("device %s lists %d peers, want %d", h.DevName, len(got), peers)
		}
		return nil
	})
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// idleWindows returns the agent's CPU use in each window, in % of one core.
func idleWindows(ctx context.Context, a *harness.Agent, ic IdleConfig, log *slog.Logger) ([]float64, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(idleSettle):
	}
	log.Info("measuring idle CPU", "pid", a.PID, "windows", ic.Windows, "window", ic.Window)
	var pct []float64
	before, err := ProcessCPU(a.PID)
	if err != nil {
		return nil, err
	}
	since := time.Now()
	for range ic.Windows {
		// The window is the measurement, not a wait for something to happen.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(ic.Window):
		}
		now, err := ProcessCPU(a.PID)
		if err != nil {
			return nil, err
		}
		if err := exited(a)(); err != nil {
			return nil, err
		}
		pct = append(pct, 100*float64(now-before)/float64(time.Since(since)))
		before, since = now, time.Now()
	}
	return pct, nil
}
