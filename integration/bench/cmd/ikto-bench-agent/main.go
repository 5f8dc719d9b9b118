// Command ikto-bench-agent is one ikto agent core in a process of its own,
// for the initial-sync and memory figures of ikto-bench: pkg/agent.Run, as
// ikto-agent runs it, with the in-memory device or the embedded userspace
// WireGuard device and no admin socket. It runs until its device carries the
// first snapshot, checks the peer count, prints one JSON line (the time from
// Run to that moment, peak and current RSS, live Go heap) and stops.
//
// It is a separate, small binary so that its memory is an agent's alone: the
// bench driver links a nats-server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/integration/bench/agentstats"
	"github.com/ikto-mesh/ikto/pkg/agent"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
	"github.com/ikto-mesh/ikto/pkg/wgdev/userspace"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ikto-bench-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("c", "", "agent configuration")
	device := flag.String("device", "fake", "device: fake (in memory) or userspace (embedded wireguard-go)")
	expect := flag.Int("expect", -1, "peers the device must carry once synced (-1: do not check)")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	flag.Parse()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if path := os.Getenv("IKTO_BENCH_AGENT_CPUPROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d := &opener{kind: *device, log: log}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ready := make(chan time.Duration, 1)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- agent.Run(ctx, cfg, agent.Options{Log: log, Version: "bench", OpenDevice: d.open,
			Ready: func() { ready <- time.Since(start) }})
	}()
	var st agentstats.Stats
	select {
	case st.Sync = <-ready:
		st.CPU = cpuTime()
	case err := <-done:
		return fmt.Errorf("agent stopped before its device was synced: %w", err)
	}
	if err := report(&st, d.dev, *expect); err != nil {
		return err
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("agent stop: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(st)
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// opener opens the device the flags ask for and keeps it, to count its
// peers.
type opener struct {
	kind string
	log  *slog.Logger
	dev  wgdev.Device
}

func (o *opener) open(c wgdev.Config) (wgdev.Device, error) {
	switch o.kind {
	case "fake":
		o.dev = fake.New(c)
	case "userspace":
		d, err := userspace.Open(c, o.log)
		if err != nil {
			return nil, err
		}
		o.dev = d
	default:
		return nil, fmt.Errorf("-device %q: want fake or userspace", o.kind)
	}
	return o.dev, nil
}

// report checks the device and fills in the memory figures: the live heap
// after a collection, and the resident set as the kernel counts it.
func report(st *agentstats.Stats, dev wgdev.Device, expect int) error {
	peers, err := dev.Peers()
	if err != nil {
		return err
	}
	st.Peers = len(peers)
	if expect >= 0 && st.Peers != expect {
		return fmt.Errorf("device carries %d peers once synced, want %d", st.Peers, expect)
	}
	peers = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapLive = ms.HeapAlloc
	st.Memory, err = agentstats.ReadMemory(os.Getpid())
	return err
}
