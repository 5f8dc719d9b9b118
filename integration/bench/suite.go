package bench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Mode is one size of the whole suite.
type Mode struct {
	Name        string
	Propagation []PropagationConfig
	Sync        []SyncVariant
	Idle        IdleConfig
	Mesh        MeshConfig
	// BigMesh, when its Hosts is set, is one more launch of that many
	// hosts, for the all-pairs figure only.
	BigMesh   MeshConfig
	DataPlane DataPlaneConfig
	Restart   RestartConfig
}

// Full is what `make bench` runs: the sizes and targets of the issue.
var Full = Mode{
	Name: "full",
	Propagation: []PropagationConfig{
		{Hosts: 100, Rounds: 100},
		{Hosts: 1_000, Rounds: 100, TargetP99: 30},
		// 10,000 agents holding 10,000 peers each would be 10⁸ peer
		// entries: 100 full agents measure, 9,900 light watchers load the
		// server like the rest of the fleet.
		{Hosts: 10_000, Full: 100, Rounds: 100, TargetP99: 300},
	},
	Sync: []SyncVariant{
		{Device: "fake", Records: 1_000, Runs: 5},
		{Device: "fake", Records: 10_000, Runs: 5, TargetSyncMs: 300, TargetPeakRSSMB: 60},
		{Device: "fake", Records: 10_000, Runs: 5, Signed: true},
		{Device: "userspace", Records: 10_000, Runs: 3, TargetSyncMs: 2000},
	},
	Idle:      IdleConfig{Peers: 1_000, Window: 10 * time.Second, Windows: 6},
	Mesh:      MeshConfig{Hosts: 10, Launches: 5, Joins: 5, Restarts: 3},
	BigMesh:   MeshConfig{Hosts: 30, Launches: 1},
	DataPlane: DataPlaneConfig{Rounds: 3, Seconds: 5 * time.Second},
	Restart:   RestartConfig{Restarts: 5},
}

// Smoke is what CI runs (`make bench-smoke`): every scenario at a size that
// takes seconds, so the benchmark code cannot rot. Its figures mean little.
var Smoke = Mode{
	Name:        "smoke",
	Propagation: []PropagationConfig{{Hosts: 100, Rounds: 10}},
	Sync: []SyncVariant{
		{Device: "fake", Records: 1_000, Runs: 2},
		{Device: "fake", Records: 1_000, Runs: 2, Signed: true},
		{Device: "userspace", Records: 1_000, Runs: 1},
	},
	Idle:      IdleConfig{Peers: 100, Window: 2 * time.Second, Windows: 1},
	Mesh:      MeshConfig{Hosts: 3, Launches: 1, Joins: 1, Restarts: 1},
	DataPlane: DataPlaneConfig{Rounds: 1, Seconds: time.Second},
	Restart:   RestartConfig{Restarts: 1},
}

// Scenarios names the parts of the suite, in the order they run.
var Scenarios = []string{"propagation", "sync", "idle", "mesh", "dataplane", "restart"}

// Suite runs a Mode.
type Suite struct {
	Mode Mode
	// Only, when not empty, restricts the run to these scenarios.
	Only []string
	// CPUProfile, when set, is where each propagation run's profile goes,
	// suffixed with its N (see PropagationConfig).
	CPUProfile string
	Log        *slog.Logger
	// Bins builds or finds the binaries; called once, by the first scenario
	// that runs processes.
	Bins func(context.Context) (*Binaries, error)
}

// Run runs every selected scenario in turn into r. A scenario that fails is
// recorded in r and the others still run; Run reports whether all completed.
func (s *Suite) Run(ctx context.Context, r *Report) bool {
	var bins *Binaries
	binaries := func() (*Binaries, error) {
		if bins != nil {
			return bins, nil
		}
		b, err := s.Bins(ctx)
		bins = b
		return b, err
	}
	ok := true
	for _, name := range Scenarios {
		if len(s.Only) > 0 && !slices.Contains(s.Only, name) {
			continue
		}
		if ctx.Err() != nil {
			r.Fail(name, ctx.Err())
			return false
		}
		s.Log.Info("scenario", "name", name, "mode", s.Mode.Name)
		start := time.Now()
		figs, err := s.runOne(ctx, name, binaries)
		r.Add(figs...)
		if err != nil {
			r.Fail(name, err)
			s.Log.Error("scenario failed", "name", name, "err", err)
			ok = false
			continue
		}
		s.Log.Info("scenario done", "name", name, "took", time.Since(start).Round(time.Second))
	}
	return ok
}

func (s *Suite) runOne(ctx context.Context, name string, binaries func() (*Binaries, error)) ([]Figure, error) {
	if name == "propagation" {
		var figs []Figure
		for _, pc := range s.Mode.Propagation {
			if s.CPUProfile != "" {
				pc.CPUProfile = fmt.Sprintf("%s.%d", s.CPUProfile, pc.Hosts)
			}
			f, err := Propagation(ctx, pc, s.Log)
			figs = append(figs, f...)
			if err != nil {
				return figs, fmt.Errorf("N=%d: %w", pc.Hosts, err)
			}
		}
		return figs, nil
	}
	bins, err := binaries()
	if err != nil {
		return nil, err
	}
	switch name {
	case "sync":
		return InitialSync(ctx, bins, s.Mode.Sync, s.Log)
	case "idle":
		return IdleCost(ctx, bins, s.Mode.Idle, s.Log)
	case "mesh":
		figs, err := Mesh(ctx, bins, s.Mode.Mesh, s.Log)
		if err != nil || s.Mode.BigMesh.Hosts == 0 {
			return figs, err
		}
		big, err := BigLaunch(ctx, bins, s.Mode.BigMesh.Hosts, s.Mode.BigMesh.Launches, s.Log)
		return append(figs, big...), err
	case "dataplane":
		return DataPlane(ctx, bins, s.Mode.DataPlane, s.Log)
	case "restart":
		return Restart(ctx, bins, s.Mode.Restart, s.Log)
	}
	return nil, fmt.Errorf("unknown scenario %q (have %v)", name, Scenarios)
}
