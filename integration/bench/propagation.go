package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// PropagationConfig sizes one propagation run.
type PropagationConfig struct {
	// Hosts is N: records in the bucket, each with its own NATS connection
	// and bucket-wide watch.
	Hosts int
	// Full is how many of them run the full agent core; the rest are light
	// watchers. 0 or Hosts means all of them.
	Full int
	// Rounds is how many new records are put, one after another.
	Rounds int
	// Target is the p99 goal for "applied on every agent", in ms (0: none).
	TargetP99 float64
	// CPUProfile, when set, is a file that receives a CPU profile of the
	// probe rounds (not of the start-up), for finding what a figure costs.
	CPUProfile string
}

// probeTimeout bounds one probe; a change that takes longer is a failure.
const probeTimeout = time.Minute

// benchMesh is the mesh of the in-process scenarios. The bucket is private
// to the run's own nats-server, so no other run can collide with it.
var benchMesh = netip.MustParsePrefix(config.DefaultMeshCIDR)

// Propagation measures put of one new peer record → applied on every agent's
// device. It starts its own nats-server, fills the bucket with Hosts claims,
// runs the agents, then puts Rounds new records one at a time, waiting until
// every agent has applied each one (and its deletion) before the next.
func Propagation(ctx context.Context, pc PropagationConfig, log *slog.Logger) (figs []Figure, err error) {
	if pc.Full <= 0 || pc.Full > pc.Hosts {
		pc.Full = pc.Hosts
	}
	defer simulationGC()()
	env, err := newPropagationEnv(ctx, "propagation", log)
	if err != nil {
		return nil, err
	}
	defer env.close()

	if err := env.fill(ctx, pc.Hosts-pc.Full); err != nil {
		return nil, err
	}
	started := time.Now()
	agents, err := env.startAgents(ctx, pc.Full)
	if err != nil {
		return nil, err
	}
	stopAgents := sync.OnceValue(agents.stop)
	defer func() { err = errors.Join(err, stopAgents()) }()
	if err := agents.checkPeers(pc.Hosts - 1); err != nil {
		return nil, err
	}
	log.Info("agents synced", "agents", pc.Full, "peers_each", pc.Hosts-1, "took", time.Since(started).Round(time.Millisecond))
	var watchers *lightWatchers
	stopWatchers := func() error { return nil }
	if light := pc.Hosts - pc.Full; light > 0 {
		if watchers, err = startWatchers(ctx, env.url, env.bucket, light); err != nil {
			return nil, err
		}
		stopWatchers = sync.OnceValue(watchers.stop)
		defer stopWatchers()
		log.Info("light watchers up", "watchers", light)
	}
	// The rounds must not pay for the start-up's garbage.
	runtime.GC()
	gcs := gcCycles()
	stopProfile, err := startCPUProfile(pc.CPUProfile)
	if err != nil {
		return nil, err
	}
	cpu, err := env.cpuTimes()
	if err != nil {
		return nil, err
	}
	res, err := env.probeRounds(ctx, pc.Rounds, agents, watchers)
	stopProfile()
	if err != nil {
		return nil, err
	}
	if res.serverCPU, res.clientCPU, err = env.cpuSince(cpu, pc.Rounds); err != nil {
		return nil, err
	}
	res.gcs = gcCycles() - gcs
	if res.consumers, err = env.consumers(ctx); err != nil {
		return nil, err
	}
	// The floor on the same server, with the agents and watchers gone.
	if err := errors.Join(stopAgents(), stopWatchers()); err != nil {
		return nil, err
	}
	floor, err := env.fanoutFloor(ctx, pc.Hosts, pc.Rounds)
	if err != nil {
		return nil, err
	}
	return append(res.figures(pc), floor.figures(pc.Hosts)...), nil
}

// consumers is how many consumers the bucket's stream holds.
func (e *propagationEnv) consumers(ctx context.Context) (int, error) {
	st, err := e.js.Stream(ctx, "KV_"+e.bucket)
	if err != nil {
		return 0, fmt.Errorf("stream of %s: %w", e.bucket, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream of %s: %w", e.bucket, err)
	}
	return info.State.Consumers, nil
}

// propagationResult holds every probe's per-observer delays.
type propagationResult struct {
	addAll, addEach, delAll, watchAll []time.Duration
	// CPU time per round (put and delete) of the server and of this process.
	serverCPU, clientCPU time.Duration
	gcs                  uint64 // collections of this process during the rounds
	// consumers on the bucket's stream after the rounds, every agent and
	// watcher still following it.
	consumers int
}

// probeRounds puts rounds new records one at a time and times each until
// every agent applied it and every watcher received it; then deletes it and
// times the removal the same way.
func (e *propagationEnv) probeRounds(ctx context.Context, rounds int, agents *simAgents, watchers *lightWatchers) (*propagationResult, error) {
	res := &propagationResult{}
	for r := range rounds {
		rec, err := e.fleet.Records(1)
		if err != nil {
			return nil, err
		}
		pub, _ := wgtypes.ParseKey(rec[0].PublicKey)
		key := peer.Key(netip.MustParsePrefix(rec[0].AllowedIP))

		add, seen, err := e.probe(ctx, agents, watchers, peerChange{key: pub}, key, func() error {
			_, err := e.kv.Create(ctx, key, rec[0].Encode())
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("round %d: put %s: %w", r+1, key, err)
		}
		res.addAll = append(res.addAll, slices.Max(add))
		res.addEach = append(res.addEach, add...)
		if len(seen) > 0 {
			res.watchAll = append(res.watchAll, slices.Max(seen))
		}
		del, _, err := e.probe(ctx, agents, nil, peerChange{key: pub, remove: true}, key, func() error {
			return e.kv.Delete(ctx, key)
		})
		if err != nil {
			return nil, fmt.Errorf("round %d: delete %s: %w", r+1, key, err)
		}
		res.delAll = append(res.delAll, slices.Max(del))
	}
	return res, nil
}

// probe arms the agents' devices (and the watchers, when given) for change,
// runs write, and waits for every observer.
func (e *propagationEnv) probe(ctx context.Context, agents *simAgents, watchers *lightWatchers, change peerChange, key string, write func() error) (applied, received []time.Duration, err error) {
	pa := newProbe(len(agents.devs))
	change.probe = pa
	var pw *probe
	pa.arm()
	if watchers != nil {
		pw = newProbe(len(watchers.conns))
		pw.start = pa.start
		watchers.target.Store(&keyArrival{key: key, probe: pw})
		defer watchers.target.Store(nil)
	}
	agents.target.Store(&change)
	defer agents.target.Store(nil)
	if err := write(); err != nil {
		return nil, nil, err
	}
	if err := pa.wait(ctx, probeTimeout); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("agents: %w", err), agents.failure())
	}
	if pw != nil {
		if err := pw.wait(ctx, probeTimeout); err != nil {
			return nil, nil, fmt.Errorf("watchers: %w", err)
		}
		received = pw.latencies()
	}
	return pa.latencies(), received, nil
}

func (r *propagationResult) figures(pc PropagationConfig) []Figure {
	n := fmt.Sprintf("N=%s", thousands(pc.Hosts))
	var target *Target
	if pc.TargetP99 > 0 {
		target = AtMost(StatP99, pc.TargetP99)
	}
	all := NewFigure("propagation", n+": put → applied on every agent", "ms", Millis(r.addAll), target)
	all.Note = fmt.Sprintf("%d garbage collections of the simulation during the rounds", r.gcs)
	if pc.Full < pc.Hosts {
		all.Note = fmt.Sprintf("%s full agents + %s light watchers (own connection and subscription each); %s", thousands(pc.Full), thousands(pc.Hosts-pc.Full), all.Note)
	}
	figs := []Figure{
		all,
		NewFigure("propagation", n+": put → applied, each agent", "ms", Millis(r.addEach), nil),
		NewFigure("propagation", n+": delete → removed on every agent", "ms", Millis(r.delAll), nil),
	}
	if len(r.watchAll) > 0 {
		figs = append(figs, NewFigure("propagation", n+": put → received by every watcher", "ms", Millis(r.watchAll), nil))
	}
	return append(figs,
		NewFigure("propagation", n+": consumers on the bucket's stream, every agent following it", "consumers", []float64{float64(r.consumers)}, AtMost(StatMax, 0)),
		NewFigure("propagation", n+": CPU per put+delete, nats-server", "ms", Millis([]time.Duration{r.serverCPU}), nil),
		NewFigure("propagation", n+": CPU per put+delete, all agents", "ms", Millis([]time.Duration{r.clientCPU}), nil))
}

// thousands writes n with comma separators: 10000 → "10,000".
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
