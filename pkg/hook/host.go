// Package hook is ikto-agent's host for hook plugins (SPEC §5). Each
// configured hook is an executable started through hashicorp/go-plugin and
// driven over gRPC by its own supervisor: Configure once per process, then
// Apply with every new peer set the agent hands to Update. Supervisors run
// independently, so a hook that errors, hangs until its timeout or exits
// delays neither the device nor the other hooks; it is logged, counted,
// killed and restarted with backoff, and its fresh process is handed the full
// state. When Run's context ends every hook gets the last state and Stop, and
// is killed after a grace period.
package hook

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/retry"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Metrics are the hook metrics of the agent's registry, labelled by hook
// name. Nil vectors are not updated.
type Metrics struct {
	Failures *prometheus.CounterVec // failed calls, timeouts, exits, refused starts
	Restarts *prometheus.CounterVec // processes started after a failure
	Up       *prometheus.GaugeVec   // 1 while a configured process serves the hook
}

// Options tune a Host; the zero value is usable.
type Options struct {
	Log     *slog.Logger
	Metrics Metrics
	// Grace is how long hooks get, once Run's context ends, to finish the
	// call in flight, take the last state and Stop before they are killed.
	// Default 5s.
	Grace time.Duration
	// Backoff spaces the restarts of a failing hook. Default RestartPolicy.
	Backoff retry.Policy
	// Healthy is how long a process must have served for its failure to
	// restart the backoff from its shortest delay. Default 1m.
	Healthy time.Duration
}

// RestartPolicy spaces the restarts of a failing hook: quickly at first, then
// no more than twice a minute.
var RestartPolicy = retry.Policy{Min: 250 * time.Millisecond, Max: 30 * time.Second}

func (o *Options) setDefaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.Backoff.Max == 0 {
		o.Backoff = RestartPolicy
	}
	if o.Healthy <= 0 {
		o.Healthy = time.Minute
	}
}

// Host runs the configured hooks. Update may be called at any time, also
// before Run; Run is called once.
type Host struct {
	opt  Options
	sups []*supervisor

	mu    sync.Mutex // orders Update's generation numbers
	gen   uint64
	state atomic.Pointer[state]
}

// state is one peer set handed to Update. Generations only grow, so a
// supervisor that always reads the newest state never applies an older set
// after a newer one.
type state struct {
	gen   uint64
	peers []sdk.Peer
}

// New returns a host for hooks on node. Each hook is handed node with its own
// config in Node.Config.
func New(hooks []config.Hook, node sdk.Node, opt Options) *Host {
	opt.setDefaults()
	h := &Host{opt: opt}
	for _, hc := range hooks {
		s := newSupervisor(h, hc, node)
		h.sups = append(h.sups, s)
		// Every hook's series exists from the start, so a dashboard sees
		// zeros instead of missing series.
		if m := opt.Metrics; m.Failures != nil {
			m.Failures.WithLabelValues(hc.Name)
		}
		if m := opt.Metrics; m.Restarts != nil {
			m.Restarts.WithLabelValues(hc.Name)
		}
		s.setUp(false)
	}
	return h
}

// Update hands every hook the peers the device now carries. It never blocks:
// a hook busy with an older set gets the newest one when it is done, and the
// sets in between are skipped (each Apply carries the full set anyway).
func (h *Host) Update(peers []sdk.Peer) {
	ps := sdk.SortPeers(slices.Clone(peers))
	h.mu.Lock()
	h.gen++
	h.state.Store(&state{gen: h.gen, peers: ps})
	h.mu.Unlock()
	for _, s := range h.sups {
		s.kick()
	}
}

func (h *Host) latest() *state { return h.state.Load() }

// Run supervises every hook until ctx ends, then stops them all and returns
// nil once every hook process is gone. Hook failures never end Run.
func (h *Host) Run(ctx context.Context) error {
	if len(h.sups) == 0 {
		<-ctx.Done()
		return nil
	}
	// go-plugin's hooks create their sockets here; a hook killed by the
	// supervisor cannot remove its own, so the host does.
	dir, err := os.MkdirTemp("", "ikto-hooks-")
	if err != nil {
		h.opt.Log.Error("no directory for hook sockets; hooks not started", "err", err)
		<-ctx.Done()
		return nil
	}
	defer os.RemoveAll(dir)

	// Calls are bounded by hard, which outlives ctx by the grace period:
	// cancelling ctx does not cut the call in flight, so a hook never gets
	// a second call while its first is still running.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(h.opt.Grace, cancelHard) })
	defer stopGrace()

	var wg sync.WaitGroup
	for _, s := range h.sups {
		wg.Go(func() { s.run(ctx, hard, dir) })
	}
	wg.Wait()
	return nil
}
