package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ikto-mesh/ikto/pkg/agent"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// simAgents are full agents in this process: each is pkg/agent.Run with its
// own NATS connection, bucket-wide watch, validation and reconcile loop, and
// an in-memory device. Only the device is not real.
type simAgents struct {
	target atomic.Pointer[peerChange]

	mu   sync.Mutex
	devs []*probedDevice

	cancel context.CancelFunc
	exited chan error // one value per agent that returned
	count  int
}

// agentsStartTimeout bounds bringing up the whole pool; 1,000 agents that
// each download a 1,000-record snapshot take tens of seconds on two cores.
const agentsStartTimeout = 10 * time.Minute

// startAgents runs one agent per config. Their devices open only after
// every agent has claimed its prefix, so each agent's first snapshot holds
// the whole fleet: otherwise N agents starting one after another make N²
// watch events, which says nothing about a running mesh and takes minutes.
// It returns when every agent has configured its first snapshot.
func startAgents(ctx context.Context, cfgs []*config.Settings, log *slog.Logger) (*simAgents, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &simAgents{cancel: cancel, exited: make(chan error, len(cfgs)), count: len(cfgs), devs: make([]*probedDevice, len(cfgs))}
	claimed := make(chan struct{})
	var opened atomic.Int64
	var ready sync.WaitGroup
	ready.Add(len(cfgs))
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()

	for i, cfg := range cfgs {
		var once sync.Once
		opts := agent.Options{
			Log:     log.With("agent", cfg.Name),
			Version: "bench",
			Ready:   func() { once.Do(ready.Done) },
			OpenDevice: func(dc wgdev.Config) (wgdev.Device, error) {
				if opened.Add(1) == int64(len(cfgs)) {
					close(claimed)
				}
				select {
				case <-claimed:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				d := &probedDevice{Device: fake.New(dc), index: i, target: &s.target}
				s.mu.Lock()
				s.devs[i] = d
				s.mu.Unlock()
				return d, nil
			},
		}
		go func() {
			err := agent.Run(ctx, cfg, opts)
			if err == nil && ctx.Err() == nil {
				err = errors.New("returned before it was stopped")
			}
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("agent %s: %w", cfg.Name, err)
			}
			s.exited <- err
		}()
	}
	select {
	case <-allReady:
		return s, nil
	case err := <-s.exited:
		s.count--
		return nil, errors.Join(err, s.stop())
	case <-time.After(agentsStartTimeout):
		return nil, errors.Join(fmt.Errorf("%d agents not ready after %s", len(cfgs), agentsStartTimeout), s.stop())
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), s.stop())
	}
}

// checkPeers verifies that every device holds want peers.
func (s *simAgents) checkPeers(want int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devs {
		peers, err := d.Peers()
		if err != nil {
			return err
		}
		if len(peers) != want {
			return fmt.Errorf("device of agent %d holds %d peers, want %d", d.index, len(peers), want)
		}
	}
	return nil
}

// failure reports an agent that stopped on its own, if any.
func (s *simAgents) failure() error {
	select {
	case err := <-s.exited:
		s.count--
		if err == nil {
			err = errors.New("an agent stopped")
		}
		return err
	default:
		return nil
	}
}

// agentsStopTimeout bounds waiting for every agent to return.
const agentsStopTimeout = 2 * time.Minute

// stop cancels every agent and waits until each has returned.
func (s *simAgents) stop() error {
	s.cancel()
	var errs []error
	deadline := time.After(agentsStopTimeout)
	for range s.count {
		select {
		case err := <-s.exited:
			if err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		case <-deadline:
			return errors.Join(append(errs, fmt.Errorf("agents still running %s after stop", agentsStopTimeout))...)
		}
	}
	s.count = 0
	return errors.Join(errs...)
}
