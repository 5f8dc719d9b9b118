// Package agent is ikto-agent's composition root: it validates what it is
// given, connects to NATS, claims the host's prefix, configures the WireGuard
// device, then keeps the device's peers equal to the bucket's accepted records
// until its context ends. It owns every long-lived part's lifetime; the parts
// (store, peer, reconcile, wgdev, api) know nothing of each other.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/hook"
	"github.com/ikto-mesh/ikto/pkg/metrics"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
	"github.com/ikto-mesh/ikto/pkg/state"
	"github.com/ikto-mesh/ikto/pkg/store"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// ErrEvicted means this host's record was deleted or its key revoked. The
// agent has removed every peer and must not claim again by itself (exit 4).
var ErrEvicted = errors.New("evicted")

// ErrTakenOver means this host's prefix is now held by another public key.
// It matches store.ErrAddressInUse too (exit 3).
var ErrTakenOver = fmt.Errorf("prefix taken over by another key: %w", store.ErrAddressInUse)

// Options are what Run needs besides the config.
type Options struct {
	// Socket is the admin socket path; empty means no socket (tests).
	Socket string
	// Log receives every event worth an operator's time.
	Log *slog.Logger
	// OpenDevice opens the WireGuard device (backend.Open in ikto-agent, a
	// fake in tests). Required.
	OpenDevice func(wgdev.Config) (wgdev.Device, error)
	// Version is reported in heartbeats.
	Version string
	// Ready, when set, is called once the device carries the first snapshot.
	Ready func()
}

// Agent is one running ikto-agent.
type Agent struct {
	set    *config.Settings
	opt    Options
	log    *slog.Logger
	key    wgtypes.Key
	self   peer.Record
	prefix netip.Prefix

	nc  *nats.Conn
	kv  jetstream.KeyValue
	dev wgdev.Device

	metrics     *metrics.Agent
	reconnected chan struct{} // kicks the watcher to re-snapshot
	published   atomic.Pointer[snapshot]

	// saver keeps the last accepted mesh in state_dir; nil without one.
	saver *state.Saver
	// saved is the accepted set (key → revision) last offered to saver,
	// so a pass that changed nothing writes nothing. Owned by the loop.
	saved map[string]uint64
	// restored is set when the device was opened from the snapshot before
	// the claim: a claim that then fails must take the peers back off.
	restored bool
	// hooks runs the hook plugins for the agent's whole life.
	hooks *hook.Host
}

// Run is the whole life of an agent. It returns nil after ctx is cancelled
// (the claim stays in the bucket, a kernel device keeps its peers), an error
// matching store.ErrAddressInUse when another key holds the prefix, ErrEvicted
// when this host was evicted, or another error that stops the agent.
func Run(ctx context.Context, cfg *config.Settings, opt Options) error {
	a, err := newAgent(cfg, opt)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

func newAgent(set *config.Settings, opt Options) (*Agent, error) {
	if opt.OpenDevice == nil {
		return nil, errors.New("agent: Options.OpenDevice is required")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	key, err := config.LoadPrivateKey(set.PrivateKeyPath)
	if err != nil {
		return nil, fmt.Errorf("private_key_path: %w", err)
	}
	name := set.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	a := &Agent{
		set: set, opt: opt, log: opt.Log, key: key, prefix: set.Prefix,
		reconnected: make(chan struct{}, 1),
		metrics:     metrics.NewAgent(),
	}
	a.self = peer.Record{
		Name:             name,
		PublicKey:        key.PublicKey().String(),
		AdvertiseAddress: set.Advertise.String(),
		AllowedIP:        a.prefix.String(),
		WGPort:           set.Device.Port,
	}
	a.published.Store(&snapshot{})
	if set.StateDir != "" {
		a.saver = state.NewSaver(state.Path(set.StateDir, set.Device.Name), a.log)
	}
	a.hooks = a.newHookHost()
	return a, nil
}

func (a *Agent) run(ctx context.Context) error {
	// Find out now, before touching NATS or the device, whether another agent
	// already serves this socket: that is almost always a second copy of us.
	var sock net.Listener
	if a.opt.Socket != "" {
		l, err := api.Listen(a.opt.Socket)
		if err != nil {
			return err
		}
		sock = l
		defer sock.Close()
	}

	// Hooks run for the agent's whole life, so that a mesh restored from
	// the snapshot gets its routes and firewall sets while NATS is down.
	// They stop last: each gets the final state (none, after an eviction).
	hooksCtx, stopHooks := context.WithCancel(ctx)
	hooksDone := make(chan struct{})
	go func() {
		defer close(hooksDone)
		_ = a.runHooks(hooksCtx) // a failing hook never ends the agent
	}()
	defer func() { stopHooks(); <-hooksDone }()

	// The data plane before the control plane: NATS may not answer for a
	// long while, and the other hosts still hold our claim and send to us.
	if err := a.restore(); err != nil {
		return err
	}
	defer a.closeDevice()

	if err := a.connect(ctx); err != nil {
		return err
	}
	defer a.nc.Close()

	if err := a.join(ctx); err != nil {
		return err
	}
	return a.serve(ctx, sock)
}

// join opens the bucket, claims the prefix and opens the device (unless the
// snapshot already did), retrying while NATS is unreachable.
func (a *Agent) join(ctx context.Context) error {
	if err := a.openBucket(ctx); err != nil {
		return err
	}
	rev, err := a.claim(ctx)
	if err != nil {
		a.lostClaim(err)
		return err
	}
	a.log.Info("claimed prefix", "prefix", a.prefix, "key", peer.Key(a.prefix), "revision", rev)
	if a.dev == nil {
		return a.openDevice()
	}
	return nil
}

// serve runs the long-lived parts until ctx ends or one of them fails.
func (a *Agent) serve(ctx context.Context, sock net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan store.Batch, 16)
	// The watch is probed once per resync: drift of the watch itself (a
	// consumer lost with a cluster member) is repaired like the device's.
	w := &store.Watcher{KV: a.kv, Log: a.log, Restart: a.reconnected, Probe: a.set.Resync, Connected: a.connected}
	g.Go(func() error { return ignoreCanceled(w.Run(gctx, batches)) })
	g.Go(func() error { return a.loop(gctx, batches) })
	g.Go(func() error { return a.heartbeat(gctx) })
	if sock != nil {
		g.Go(func() error { return api.Serve(gctx, sock, a.routes()) })
	}
	if a.saver != nil {
		g.Go(func() error { return a.saver.Run(gctx) })
	}
	err := g.Wait()
	if err == nil && ctx.Err() != nil {
		a.log.Info("stopping; the claim stays in the bucket", "prefix", a.prefix)
	}
	return err
}

func (a *Agent) openDevice() error {
	dc := wgdev.Config{
		Name:       a.set.Device.Name,
		PrivateKey: a.key,
		ListenPort: a.set.Device.Port,
		Address:    a.set.Device.Address,
		MTU:        a.set.Device.MTU,
	}
	dev, err := a.opt.OpenDevice(dc)
	if err != nil {
		return fmt.Errorf("device %s: %w", dc.Name, err)
	}
	a.dev = dev
	a.log.Info("device ready", "device", dev.Name(), "backend", dev.Backend(), "address", dc.Address, "port", dc.ListenPort)
	return nil
}

func (a *Agent) closeDevice() {
	if a.dev != nil {
		a.dev.Close()
	}
}

// identity is what this agent's snapshot is bound to.
func (a *Agent) identity() state.Identity {
	return state.Identity{
		Device:    a.set.Device.Name,
		PublicKey: a.key.PublicKey(),
		Prefix:    a.prefix,
		Rules:     peer.Rules{Mesh: a.set.Mesh, Bits: a.set.Prefix.Bits()},
	}
}

// restore opens the device and puts back the peers of the snapshot in
// state_dir, before NATS is asked anything, when there is a snapshot written
// for this device, key, prefix and mesh whose every record still passes the
// rules. It only adds peers: any the device already has (a kernel device that
// outlived the agent) stay as they are until the bucket says otherwise, so a
// restart never takes a working peer away. A missing, foreign or corrupt
// snapshot is logged and ignored; only failing to open the device is an error.
func (a *Agent) restore() error {
	if a.saver == nil {
		return nil
	}
	path := a.saver.Path()
	snap, err := state.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var peers map[wgtypes.Key]peer.Accepted
	if err == nil {
		peers, err = snap.Peers(a.identity())
	}
	if err != nil {
		a.log.Warn("not restoring the mesh snapshot; the device waits for NATS", "path", path, "err", err)
		return nil
	}
	if err := a.openDevice(); err != nil {
		return err
	}
	a.restored = true
	added, err := a.addMissing(peers)
	if err != nil {
		a.log.Error("restore the mesh snapshot failed; the device waits for NATS", "path", path, "device", a.dev.Name(), "err", err)
		return nil
	}
	a.log.Info("restored the mesh from the snapshot until NATS answers", "path", path, "saved_at", snap.SavedAt,
		"peers", len(peers), "added", added)
	a.notifyHooks(peer.View{Peers: peers})
	return nil
}

// addMissing configures the peers the device lacks, in one call.
func (a *Agent) addMissing(peers map[wgtypes.Key]peer.Accepted) (int, error) {
	have, err := a.dev.Peers()
	if err != nil {
		return 0, fmt.Errorf("read peers of %s: %w", a.dev.Name(), err)
	}
	adds := reconcile.Plan{Add: reconcile.PlanPeers(a.desired(peers), reconcile.FromDevice(have)).Add}
	if err := a.dev.ConfigurePeers(adds.PeerConfigs()); err != nil {
		return 0, fmt.Errorf("configure %d peers on %s: %w", len(adds.Add), a.dev.Name(), err)
	}
	return len(adds.Add), nil
}

// lostClaim cleans up after a claim that failed for good. A host whose
// prefix is held by another key, or whose key is revoked, takes off the peers
// it restored and forgets its snapshot: it is no longer part of that mesh.
// Any other failure (a stop, a permission error) leaves the device as it is.
func (a *Agent) lostClaim(err error) {
	if !errors.Is(err, store.ErrAddressInUse) && !errors.Is(err, ErrEvicted) {
		return
	}
	a.discardSnapshot()
	if !a.restored {
		return
	}
	res, rerr := reconcile.New(a.dev).Apply(nil, true)
	if rerr != nil {
		a.log.Error("remove the restored peers failed", "device", a.dev.Name(), "err", rerr)
		return
	}
	a.log.Info("removed the peers restored from the snapshot", "device", a.dev.Name(), "removed", len(res.Plan.Remove))
	a.notifyHooks(peer.View{})
}

func (a *Agent) discardSnapshot() {
	if a.saver == nil {
		return
	}
	if err := a.saver.Discard(); err != nil {
		a.log.Warn("remove the mesh snapshot failed", "err", err)
	}
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// retry calls f until it succeeds, ctx ends, or f returns a permanent error
// (wrapped in permanent). Between attempts it waits a jittered, doubling delay.
func retry(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) error {
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		var p permanentError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &p):
			return p.err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		log.Warn(what+" failed; retrying", "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jitter(delay)):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
