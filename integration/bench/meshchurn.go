package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// joinResult is one join, in ms.
type joinResult struct {
	fromClaim, fromStart float64 // → every device routes the joiner's prefix
	endpoint             float64 // claim → every device has its endpoint too
	answered             float64 // claim → every pair with the joiner answers
}

// join starts an agent on j while the mesh runs, with pings going both ways
// between j and every host from the agent's start, and measures the time
// from its claim reaching the bucket (and from its start) to the moment
// every device of the mesh lists it, and from its claim to every pair with
// it answering. Then j leaves again (stopped, record deleted, gone from every
// device).
func (m *meshRun) join(ctx context.Context, j *harness.Host) (r joinResult, err error) {
	key := peer.Key(j.Prefix())
	kw, err := m.kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		return r, fmt.Errorf("watch %s: %w", key, err)
	}
	defer kw.Stop()
	start := time.Now()
	a, answered, err := m.startPinging(ctx, j, m.joinPingers[j])
	if err != nil {
		return r, err
	}
	var claimAt time.Time
	select {
	case e := <-kw.Updates():
		claimAt = time.Now()
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			return r, fmt.Errorf("watch %s: unexpected %v", key, e)
		}
	case <-a.Done():
		return r, exited(a)()
	case <-time.After(meshTimeout):
		return r, fmt.Errorf("no claim of %s after %s", key, meshTimeout)
	}
	// A device routes the joiner's prefix, and has its endpoint, when it
	// applies the joiner's record: both moments are figures.
	want := j.ExpectedView()
	var mu sync.Mutex
	routedAt := map[*harness.Host]time.Time{}
	configured, err := m.poll.waitUntil(ctx, m.hosts, joinPoll, meshTimeout, func(h *harness.Host, v map[string]harness.PeerView) bool {
		got, ok := v[j.PublicKey.String()]
		if ok && got.AllowedIPs == want.AllowedIPs {
			mu.Lock()
			if _, seen := routedAt[h]; !seen {
				routedAt[h] = time.Now()
			}
			mu.Unlock()
		}
		return got == want
	}, exited(append(m.agents, a)...))
	if err != nil {
		return r, err
	}
	last := slices.MaxFunc(slices.Collect(maps.Values(configured)), time.Time.Compare)
	routed := slices.MaxFunc(slices.Collect(maps.Values(routedAt)), time.Time.Compare)
	reply, err := answered()
	if err != nil {
		return r, err
	}
	r = joinResult{fromClaim: ms(routed.Sub(claimAt)), fromStart: ms(routed.Sub(start)), endpoint: ms(last.Sub(claimAt)), answered: ms(reply.Sub(claimAt))}
	return r, m.leave(ctx, a, key)
}

// startPinging starts an agent on h and pings both ways between h (from
// its pinger hp) and every host from that start: what each pinger knew of
// h's earlier replies is forgotten first, so only replies to this agent
// count. The returned function waits for every pair to answer.
func (m *meshRun) startPinging(ctx context.Context, h *harness.Host, hp *pinger) (*harness.Agent, func() (time.Time, error), error) {
	hp.reset()
	for _, p := range m.pingers {
		p.forget(h.PrivateAddress)
	}
	a, err := m.start(h)
	if err != nil {
		return nil, nil, err
	}
	return a, m.pingBothWays(ctx, hp, h), nil
}

// pingBothWays pings from jp (on j) to every host and from every host to
// j until each pair has answered once; the returned function waits for that
// and gives the time of the last first reply.
func (m *meshRun) pingBothWays(ctx context.Context, jp *pinger, j *harness.Host) func() (time.Time, error) {
	var g errgroup.Group
	replies := make([]time.Time, len(m.pingers)+1)
	g.Go(func() (err error) {
		replies[0], err = jp.pingUntilAnswered(ctx, m.privateAddrs(nil), meshTimeout)
		return err
	})
	for i, p := range m.pingers {
		if p.host == j {
			continue
		}
		g.Go(func() (err error) {
			replies[i+1], err = p.pingUntilAnswered(ctx, []netip.Addr{j.PrivateAddress}, meshTimeout)
			return err
		})
	}
	return func() (time.Time, error) {
		if err := g.Wait(); err != nil {
			return time.Time{}, err
		}
		return slices.MaxFunc(replies, time.Time.Compare), nil
	}
}

// restart stops the agent of host i (SIGTERM; its embedded device goes with
// it) and starts a new one with the same key, pinging both ways between it
// and every other host from the new agent's start, and returns the time (ms)
// from that start to every pair answering again.
func (m *meshRun) restart(ctx context.Context, i int) (float64, error) {
	h := m.hosts[i]
	if err := m.agents[i].Stop(closeGrace); err != nil {
		return 0, err
	}
	start := time.Now()
	a, answered, err := m.startPinging(ctx, h, m.pingers[i])
	if err != nil {
		return 0, err
	}
	m.agents[i] = a
	reply, err := answered()
	if err != nil {
		return 0, errors.Join(err, exited(m.agents...)())
	}
	return ms(reply.Sub(start)), nil
}

func (m *meshRun) leave(ctx context.Context, a *harness.Agent, key string) error {
	if err := a.Stop(closeGrace); err != nil {
		return err
	}
	if err := m.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	pub := a.Host.PublicKey.String()
	_, err := m.poll.waitUntil(ctx, m.hosts, launchPoll, meshTimeout, func(_ *harness.Host, v map[string]harness.PeerView) bool {
		_, there := v[pub]
		return !there
	}, exited(m.agents...))
	return err
}

// BigLaunch launches hosts agents at once, launches times, and reports only
// launch → all pairs answer ping (the mesh scenario's other figures come from
// its usual size).
func BigLaunch(ctx context.Context, bins *Binaries, hosts, launches int, log *slog.Logger) (figs []Figure, err error) {
	m, err := newMeshRun(ctx, bins, MeshConfig{Hosts: hosts, Launches: launches})
	if err != nil {
		return nil, err
	}
	m.log = log
	defer func() { err = errors.Join(err, m.close()) }()
	launched, err := m.launches(ctx, launches, false)
	if err != nil {
		return nil, err
	}
	var pingAll []float64
	for _, r := range launched {
		pingAll = append(pingAll, r.allPairs)
	}
	return []Figure{NewFigure("netns mesh", fmt.Sprintf("%d hosts: launch → all pairs answer ping", hosts), "ms", pingAll, AtMost(StatMedian, 2000))}, nil
}
