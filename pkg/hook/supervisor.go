package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/retry"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// supervisor keeps one hook running: one process at a time, restarted with
// backoff after every failure. It holds only what it was given at
// construction, and learns of new states by reading latest, never by
// reaching back into its Host.
type supervisor struct {
	cfg     config.Hook
	node    sdk.Node
	timeout time.Duration
	pin     []byte // sha256 the executable must have; nil = not pinned
	log     *slog.Logger
	backoff retry.Policy
	healthy time.Duration
	metrics Metrics
	latest  func() *state // the newest desired state; nil before the first Update
	wake    chan struct{} // 1-buffered: a newer state is waiting
}

// newSupervisor prepares a supervisor for hc on node. opt must have its
// defaults set.
func newSupervisor(hc config.Hook, node sdk.Node, opt Options, latest func() *state) *supervisor {
	node.Config = hc.Config
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = config.DefaultHookTimeout
	}
	return &supervisor{
		cfg:     hc,
		node:    node,
		timeout: timeout,
		pin:     hc.SHA256,
		log:     opt.Log.With("hook", hc.Name),
		backoff: opt.Backoff,
		healthy: opt.Healthy,
		metrics: opt.Metrics,
		latest:  latest,
		wake:    make(chan struct{}, 1),
	}
}

func (s *supervisor) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run starts the hook and restarts it after each failure until ctx ends.
// hard bounds every call, also the ones made while stopping.
func (s *supervisor) run(ctx, hard context.Context, dir string) {
	bo := s.backoff.New()
	for failures := 0; ; failures++ {
		if failures > 0 {
			s.count(s.metrics.Restarts)
		}
		began := time.Now()
		err := s.session(ctx, hard, dir)
		if err == nil { // ctx ended and the hook was stopped
			return
		}
		s.count(s.metrics.Failures)
		if time.Since(began) >= s.healthy {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		s.log.Error("hook failed; restarting it", "err", err, "failures", failures+1, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session is the life of one hook process. It returns nil when ctx ended and
// the hook was stopped, or why the process had to be killed.
func (s *supervisor) session(ctx, hard context.Context, dir string) error {
	if ctx.Err() != nil {
		return nil
	}
	p, err := startProcess(s, dir)
	if err != nil {
		return err
	}
	s.log.Info("hook started", "path", s.cfg.Path, "pid", p.pid)
	err = s.serve(ctx, hard, p)
	s.setUp(false)
	if ctx.Err() == nil {
		p.kill()
		return err
	}
	// The agent is stopping. A hook whose last call failed may still be
	// busy with it or broken, so it gets no further call; a healthy one
	// gets the newest state, then Stop.
	if err == nil {
		if err := s.applyLatest(hard, p); err != nil {
			s.log.Warn("hook did not take the last state before stopping", "err", err)
		} else if err := s.call(hard, "stop", p.hook.Stop); err != nil {
			s.log.Warn("hook Stop failed", "err", err)
		}
	}
	p.kill()
	s.log.Info("hook stopped", "pid", p.pid)
	return nil
}

// errDead marks a session that ended because the process exited.
var errDead = errors.New("hook process exited")

// serve configures the process, then applies every new state until ctx ends
// (nil) or something fails. Calls are bounded by hard and the hook's
// timeout, not by ctx, so one in flight when ctx ends completes.
func (s *supervisor) serve(ctx, hard context.Context, p *process) error {
	configure := func(c context.Context) error { return p.hook.Configure(c, s.node) }
	if err := s.call(hard, "configure", configure); err != nil {
		return p.explain(err)
	}
	s.setUp(true)
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.applyLatest(hard, p); err != nil {
			return p.explain(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.exited:
			return p.explain(errDead)
		case <-s.wake:
		}
	}
}

// applyLatest hands the process the newest state, as the difference from
// what it last applied (everything is Added for a fresh process), unless it
// has that state already or there is none yet.
func (s *supervisor) applyLatest(ctx context.Context, p *process) error {
	st := s.latest()
	if st == nil || (p.applied != nil && p.applied.gen == st.gen) {
		return nil
	}
	var prev []sdk.Peer
	if p.applied != nil {
		prev = p.applied.peers
	}
	chg := sdk.Diff(prev, st.peers)
	err := s.call(ctx, "apply", func(c context.Context) error { return p.hook.Apply(c, chg) })
	if err != nil {
		return err
	}
	p.applied = st
	s.log.Debug("hook applied", "peers", len(chg.Peers), "added", len(chg.Added), "updated", len(chg.Updated), "removed", len(chg.Removed))
	return nil
}

// call makes one call bounded by the hook's timeout.
func (s *supervisor) call(ctx context.Context, op string, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := f(cctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("%s timed out after %s (hooks[].timeout): %w", op, s.timeout, err)
	}
	return err
}

func (s *supervisor) count(v *prometheus.CounterVec) {
	if v != nil {
		v.WithLabelValues(s.cfg.Name).Inc()
	}
}

func (s *supervisor) setUp(up bool) {
	if g := s.metrics.Up; g != nil {
		v := 0.0
		if up {
			v = 1
		}
		g.WithLabelValues(s.cfg.Name).Set(v)
	}
}
