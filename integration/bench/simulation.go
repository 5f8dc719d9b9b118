package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// Garbage collection of the simulation: this process's one heap holds every
// simulated agent (up to 2 GB at N=10,000), so each collection marks N
// agents' worth of memory at once and slows them all together, which real
// agents, each a process with a heap of a few MB, never do. Collections are
// made rarer while the scenario runs, within a memory limit, and the
// collections that still happen during the rounds are reported.
const (
	simulationGCPercent = 400
	simulationMemLimit  = 8 << 30
)

// simulationGC applies the settings above and returns what restores them.
func simulationGC() func() {
	percent := debug.SetGCPercent(simulationGCPercent)
	limit := debug.SetMemoryLimit(simulationMemLimit)
	return func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}
}

// gcCycles is the number of completed collections of this process.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// startCPUProfile profiles this process into path until the returned
// function is called; an empty path profiles nothing.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// propagationEnv is a run's nats-server, the bench's own connection and the
// bucket.
type propagationEnv struct {
	dir    string
	srv    *NATSProcess
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	url    string
	bucket string
	fleet  *Fleet
	log    *slog.Logger
}

func newPropagationEnv(ctx context.Context, name string, log *slog.Logger) (e *propagationEnv, err error) {
	e = &propagationEnv{bucket: name, log: log}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "ikto-bench-"); err != nil {
		return nil, fmt.Errorf("bench dir: %w", err)
	}
	if e.srv, err = StartNATSProcess(ctx, e.dir+"/nats"); err != nil {
		return nil, err
	}
	e.url = e.srv.URL
	if e.nc, err = nats.Connect(e.url, nats.Name("ikto-bench")); err != nil {
		return nil, fmt.Errorf("connect %s: %w", e.url, err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	// The bucket as an agent creates it.
	if e.kv, err = bucket.OpenBucket(ctx, e.js, name, true, 1); err != nil {
		return nil, err
	}
	if e.fleet, err = NewFleet(benchMesh, config.DefaultSubnetPrefix); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *propagationEnv) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.srv != nil {
		if err := e.srv.Close(); err != nil {
			e.log.Warn("stop nats-server", "err", err)
		}
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// fill puts n synthetic claims into the bucket.
func (e *propagationEnv) fill(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	recs, err := e.fleet.Records(n)
	if err != nil {
		return err
	}
	return PutRecords(ctx, e.js, e.bucket, recs)
}

func (e *propagationEnv) startAgents(ctx context.Context, n int) (*simAgents, error) {
	cfgs := make([]*config.Settings, n)
	for i := range cfgs {
		c, err := e.fleet.AgentConfig(e.dir, e.fleet.Next(), e.url, e.bucket, "")
		if err != nil {
			return nil, err
		}
		if cfgs[i], err = c.Resolve(); err != nil {
			return nil, err
		}
	}
	return startAgents(ctx, cfgs, agentLogger(e.log))
}

// agentLogger passes on what in-process agents report at warning level and
// above: at this scale an agent that falls behind says so there.
func agentLogger(log *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{Handler: log.Handler(), min: slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (l levelFilter) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{Handler: l.Handler.WithAttrs(as), min: l.min}
}

func (l levelFilter) WithGroup(name string) slog.Handler {
	return levelFilter{Handler: l.Handler.WithGroup(name), min: l.min}
}

// cpuTimes is the CPU time used so far by the nats-server and by this
// process (every agent and watcher).
func (e *propagationEnv) cpuTimes() ([2]time.Duration, error) {
	srv, err := e.srv.CPUTime()
	if err != nil {
		return [2]time.Duration{}, err
	}
	self, err := ProcessCPU(os.Getpid())
	return [2]time.Duration{srv, self}, err
}

// cpuSince is the CPU time per round (a put and a delete) since before.
func (e *propagationEnv) cpuSince(before [2]time.Duration, rounds int) (server, clients time.Duration, err error) {
	now, err := e.cpuTimes()
	if err != nil || rounds == 0 {
		return 0, 0, err
	}
	return (now[0] - before[0]) / time.Duration(rounds), (now[1] - before[1]) / time.Duration(rounds), nil
}
