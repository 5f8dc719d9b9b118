// Package hook is ikto-agent's host for hook plugins (docs/contract.md §8). Each
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
	"bytes"
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
// before Run; Run is called once. Reconfigure changes the set of hooks while
// Run runs.
type Host struct {
	opt  Options
	node sdk.Node

	mu    sync.Mutex // orders Update's generation numbers; guards sups
	gen   uint64
	sups  []*supervisor
	state atomic.Pointer[state]

	reconf chan []config.Hook // 1-buffered: the newest hook set wins
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
	h := &Host{opt: opt, node: node, reconf: make(chan []config.Hook, 1)}
	for _, hc := range hooks {
		h.sups = append(h.sups, h.newSupervisor(hc))
	}
	return h
}

// newSupervisor prepares a supervisor for hc and makes its metric series.
func (h *Host) newSupervisor(hc config.Hook) *supervisor {
	s := newSupervisor(hc, h.node, h.opt, h.latest)
	// Every hook's series exists from the start, so a dashboard sees
	// zeros instead of missing series.
	if m := h.opt.Metrics; m.Failures != nil {
		m.Failures.WithLabelValues(hc.Name)
	}
	if m := h.opt.Metrics; m.Restarts != nil {
		m.Restarts.WithLabelValues(hc.Name)
	}
	s.setUp(false)
	return s
}

// Update hands every hook the peers the device now carries. It never blocks:
// a hook busy with an older set gets the newest one when it is done, and the
// sets in between are skipped (each Apply carries the full set anyway).
func (h *Host) Update(peers []sdk.Peer) {
	ps := sdk.SortPeers(slices.Clone(peers))
	h.mu.Lock()
	h.gen++
	h.state.Store(&state{gen: h.gen, peers: ps})
	sups := h.sups
	h.mu.Unlock()
	for _, s := range sups {
		s.kick()
	}
}

// Reconfigure makes hooks the set Run supervises: hooks no longer listed, or
// whose settings changed, get the last state and Stop and end; new and
// changed ones start and are handed the newest state. It never blocks.
func (h *Host) Reconfigure(hooks []config.Hook) {
	select {
	case <-h.reconf: // a newer set replaces one not yet taken
	default:
	}
	h.reconf <- slices.Clone(hooks)
}

func (h *Host) latest() *state { return h.state.Load() }

// Run supervises every hook until ctx ends, then stops them all and returns
// nil once every hook process is gone. Hook failures never end Run.
func (h *Host) Run(ctx context.Context) error {
	running := map[string]*runningHook{}
	var dir string
	defer func() {
		for _, r := range running {
			<-r.done
		}
		if dir != "" {
			os.RemoveAll(dir)
		}
	}()
	h.mu.Lock()
	hooks := make([]config.Hook, 0, len(h.sups))
	for _, s := range h.sups {
		hooks = append(hooks, s.cfg)
	}
	h.mu.Unlock()
	for {
		if len(hooks) > 0 && dir == "" {
			// go-plugin's hooks create their sockets here; a hook killed
			// by the supervisor cannot remove its own, so the host does.
			d, err := os.MkdirTemp("", "ikto-hooks-")
			if err != nil {
				h.opt.Log.Error("no directory for hook sockets; hooks not started", "err", err)
			}
			dir = d
		}
		if dir != "" {
			h.apply(ctx, hooks, running, dir)
		}
		select {
		case <-ctx.Done():
			return nil
		case hooks = <-h.reconf:
		}
	}
}

// runningHook is one supervisor at work, and how to end it.
type runningHook struct {
	sup  *supervisor
	stop context.CancelFunc
	done chan struct{}
}

// start runs s until ctx ends or it is stopped. Its calls are bounded by a
// context that outlives its own by the grace period: ending it does not cut
// the call in flight, so a hook never gets a second call while its first is
// still running.
func (h *Host) start(ctx context.Context, s *supervisor, dir string) *runningHook {
	sctx, stop := context.WithCancel(ctx)
	hard, cancelHard := context.WithCancel(context.WithoutCancel(sctx))
	r := &runningHook{sup: s, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer cancelHard()
		stopGrace := context.AfterFunc(sctx, func() { time.AfterFunc(h.opt.Grace, cancelHard) })
		defer stopGrace()
		s.run(sctx, hard, dir)
	}()
	return r
}

// apply turns the running hooks into hooks.
func (h *Host) apply(ctx context.Context, hooks []config.Hook, running map[string]*runningHook, dir string) {
	h.mu.Lock()
	known := map[string]*supervisor{}
	for _, s := range h.sups {
		known[s.cfg.Name] = s
	}
	h.mu.Unlock()
	want := map[string]config.Hook{}
	for _, hc := range hooks {
		want[hc.Name] = hc
	}
	for name, r := range running {
		if hc, ok := want[name]; ok && sameHook(hc, r.sup.cfg) {
			continue
		}
		h.opt.Log.Info("hook removed or changed; stopping it", "hook", name)
		r.stop()
		<-r.done
		delete(running, name)
	}
	var sups []*supervisor
	for _, hc := range hooks {
		if r, ok := running[hc.Name]; ok {
			sups = append(sups, r.sup)
			continue
		}
		s := known[hc.Name]
		if s == nil || !sameHook(hc, s.cfg) {
			h.opt.Log.Info("hook added", "hook", hc.Name, "path", hc.Path)
			s = h.newSupervisor(hc)
		}
		sups = append(sups, s)
		running[hc.Name] = h.start(ctx, s, dir)
		s.kick()
	}
	h.mu.Lock()
	h.sups = sups
	h.mu.Unlock()
}

func sameHook(a, b config.Hook) bool {
	return a.Name == b.Name && a.Path == b.Path && bytes.Equal(a.SHA256, b.SHA256) && a.Timeout == b.Timeout &&
		bytes.Equal(a.Config, b.Config)
}
