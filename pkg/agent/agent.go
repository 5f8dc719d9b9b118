// Package agent is ikto-agent's composition root: it wires the parts and owns
// their lifetimes and the NATS lifecycle — connect, open the bucket, claim
// the prefix, watch — and hands everything the bucket says to the mesh
// controller (pkg/mesh), which decides and drives the device. Each pass's
// outcome goes to the hooks, the snapshot saver, the metrics and /v1/status.
// No membership decision is made here.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/hook"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/metrics"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/state"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// ErrEvicted means this host's record was deleted or its key revoked (exit 4).
var ErrEvicted = mesh.ErrEvicted

// Options are what Run needs besides the settings.
type Options struct {
	// Socket is the admin socket path; empty means no socket (tests).
	Socket string
	// SocketGroup may read the socket besides root (api.SocketGroup); nil
	// leaves it root's alone.
	SocketGroup *user.Group
	// Log receives every event worth an operator's time.
	Log *slog.Logger
	// OpenDevice opens the WireGuard device (backend.Open in ikto-agent, a
	// fake in tests). Required.
	OpenDevice func(wgdev.Config) (wgdev.Device, error)
	// Version is reported in heartbeats.
	Version string
	// Ready, when set, is called once, when the device first carries a mesh
	// — the bucket's, or the snapshot's restored while NATS is down: the
	// moment systemd is told READY=1.
	Ready func()
	// Reload, when set, brings the config re-read on SIGHUP.
	Reload <-chan *config.Settings
	// WatchDevice, when set, returns a channel closed when the device named
	// goes away (backend.WatchRemoval in ikto-agent); the agent then makes
	// it again.
	WatchDevice func(ctx context.Context, name string) (<-chan struct{}, error)
	// CheckDevice, when set, says whether this host can have its device
	// at all (backend.Preflight in ikto-agent: the name, CAP_NET_ADMIN,
	// TUN, the UDP port): a host that cannot must stop before it writes to
	// the bucket.
	CheckDevice func(wgdev.Config) error
	// HoldDevice, when set, marks the device name as this agent's for its
	// whole run (backend.Hold in ikto-agent), failing when another running
	// agent drives it: adopting that agent's device would have the two
	// remove each other's peers.
	HoldDevice func(name string) (release func(), err error)
}

// Agent is one running ikto-agent.
type Agent struct {
	set  *config.Settings
	opt  Options
	log  *slog.Logger
	key  wgtypes.Key
	self peer.Record
	// record is this host's record as last written (self at first, a
	// rotated key's afterwards), for the goroutines that report it.
	record atomic.Pointer[peer.Record]

	conn   *bucket.Conn
	mesh   *bucket.Mesh     // the bucket, once open
	ctl    *mesh.Controller // the device is its from the moment it opens
	keeper *bucket.Keeper   // heals the claim in the bucket

	// dev is the device, for /v1/status (served from the agent's first
	// moment) and the heartbeat: set when it is opened or made again.
	dev atomic.Pointer[devHandle]

	metrics *metrics.Agent
	hooks   *hook.Host
	saver   *state.Saver // nil without state_dir
	// reconnected kicks the watcher to re-read the bucket; audit makes it
	// look for messages removed from it without events.
	reconnected, audit chan struct{}
	// problems are what is wrong with the bucket's settings, as the watch
	// last read them (bucket.Problems), for /v1/status.
	problems atomic.Pointer[[]string]
	// instance is this process's random id, in every heartbeat; twin is
	// the other live agent with this host's key while one is seen
	// (noteTwin), for /v1/status and the heartbeats.
	instance string
	twin     atomic.Pointer[twinSeen]
	// last is the latest outcome, for /v1/status.
	last atomic.Pointer[mesh.Outcome]
	// ready is set once the device first carries a mesh (Options.Ready,
	// READY=1). Only publish touches it.
	ready bool
}

// Run is the whole life of an agent. It returns nil after ctx is cancelled
// (the claim stays in the bucket, a kernel device keeps its peers), an error
// matching bucket.ErrAddressInUse when another key holds the prefix at start,
// ErrEvicted when this host was evicted (at start or later), or another error
// that stops the agent. Loss of state while it runs — its record overwritten
// or gone, the bucket deleted — is healed, not obeyed.
func Run(ctx context.Context, set *config.Settings, opt Options) error {
	a, err := newAgent(set, opt)
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
		return nil, errors.New("private_key_path: " + err.Error())
	}
	name := set.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	a := &Agent{
		set: set, opt: opt, log: opt.Log, key: key, instance: newInstance(),
		reconnected: make(chan struct{}, 1),
		audit:       make(chan struct{}, 1),
		metrics:     metrics.NewAgent(),
		self: peer.Record{
			Name:             name,
			PublicKey:        key.PublicKey().String(),
			AdvertiseAddress: set.Advertise.String(),
			AllowedIP:        set.Prefix.String(),
			WGPort:           set.Device.Port,
		},
	}
	a.last.Store(&mesh.Outcome{State: mesh.StateWaiting})
	if set.StateDir != "" {
		a.saver = state.NewSaver(state.Path(set.StateDir, set.Device.Name), a.log)
	}
	a.hooks = a.newHookHost()
	a.ctl = a.newController()
	return a, nil
}

func (a *Agent) run(ctx context.Context) error {
	// A device another agent drives is not adopted: the second agent stops
	// before it writes anything.
	if a.opt.HoldDevice != nil {
		release, err := a.opt.HoldDevice(a.set.Device.Name)
		if err != nil {
			return fmt.Errorf("device %s: %w", a.set.Device.Name, err)
		}
		defer release()
	}
	// A host that cannot have its device stops before NATS is asked
	// anything: it must not claim a prefix it cannot serve.
	if a.opt.CheckDevice != nil {
		if err := a.opt.CheckDevice(a.deviceConfig()); err != nil {
			return fmt.Errorf("device %s: %w", a.set.Device.Name, err)
		}
	}
	// Find out now, before touching NATS, whether another agent already
	// serves this socket: that is almost always a second copy of us.
	var sock net.Listener
	if a.opt.Socket != "" {
		l, err := api.Listen(a.opt.Socket, a.opt.SocketGroup)
		if err != nil {
			return err
		}
		sock = l
		readers := "root"
		if g := a.opt.SocketGroup; g != nil {
			readers += ", group " + g.Name
		}
		a.log.Info("admin socket", "socket", a.opt.Socket, "readers", readers)
	}
	// The connection returns at once and keeps trying in the background:
	// the status shows it from the first moment.
	if err := a.connect(); err != nil {
		if sock != nil {
			sock.Close()
		}
		return err
	}
	defer a.conn.Close()

	// The parts that serve the agent's whole life: the socket ("waiting for
	// NATS" is an answer an operator needs most), the hooks (so a mesh
	// restored from the snapshot gets its routes and firewall sets while NATS
	// is down), metrics, the watchdog and reloads. None ends the agent. They
	// stop together once the control plane and the device are done, so the
	// hooks see the final state (none, after an eviction).
	background, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var parts errgroup.Group
	defer func() { stopBackground(); _ = parts.Wait() }()
	if sock != nil {
		parts.Go(func() error {
			if err := api.Serve(background, sock, a.routes()); err != nil {
				a.log.Error("admin socket failed", "socket", a.opt.Socket, "err", err)
			}
			return nil
		})
	}
	parts.Go(func() error { return a.hooks.Run(background) })
	parts.Go(func() error { a.follow(background); return nil })
	parts.Go(func() error { return a.watchdog(background) })
	if err := a.serveMetrics(background, &parts); err != nil {
		return err
	}

	// The data plane before the control plane: NATS may not answer for a
	// long while, and the other hosts still hold our claim and send to us.
	if err := a.restore(); err != nil {
		return err
	}
	defer a.closeDevice()
	if err := a.join(ctx); err != nil {
		return err
	}
	return a.serve(ctx)
}

// join opens the bucket, claims the prefix and opens the device (unless the
// snapshot already did), retrying while NATS is unreachable. A claim refused
// for good takes off the peers a restore put on.
func (a *Agent) join(ctx context.Context) error {
	if err := a.openBucket(ctx); err != nil {
		return err
	}
	// The device before the claim when the prefix is free or ours: a host
	// that reads our record may take us and send its first initiation at
	// once, and the device must be there to refuse it — the refusal is how
	// first contact learns that the host took us first (docs/contract.md
	// §5). A prefix another key holds opens nothing: the claim is refused.
	if a.dev.Load() == nil {
		if holder, err := a.mesh.HolderKey(ctx, a.set.Prefix); err == nil && (holder == "" || holder == a.self.PublicKey) {
			if err := a.openDevice(); err != nil {
				return err
			}
		}
	}
	rev, err := a.claim(ctx)
	if err != nil {
		a.lostClaim(err)
		return err
	}
	rec := a.self
	a.record.Store(&rec)
	a.log.Info("claimed prefix", "prefix", a.set.Prefix, "key", peer.Key(a.set.Prefix), "revision", rev, "seq", a.self.Seq)
	a.ctl.RecallOwn(mesh.OwnRecord{Key: peer.Key(a.set.Prefix), Value: a.self.Encode(), Revision: rev})
	if a.dev.Load() == nil {
		return a.openDevice()
	}
	return nil
}

// serve runs the long-lived parts until ctx ends or one of them fails.
func (a *Agent) serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan peer.Batch, 16)
	// The watch is probed once per resync: drift of the watch itself (a
	// consumer lost with a cluster member) is repaired like the device's.
	a.keeper = &bucket.Keeper{Mesh: a.mesh, Self: a.self, Key: a.key, Rules: a.set.Rules(), Log: a.log, Created: a.kickWatch,
		Done: func(action string) { a.metrics.ClaimRepairs.WithLabelValues(action).Inc() }}
	w := &bucket.Watcher{Mesh: a.mesh, Log: a.log, Restart: a.reconnected, Probe: a.set.Resync, Connected: a.conn.Connected,
		Audit: a.audit, Settings: a.noteBucketSettings, Reread: a.metrics.FollowRereads.Inc,
		Missing: func() { a.keeper.Request(peer.Repair{Bucket: true}) }}
	g.Go(func() error { return ignoreCanceled(w.Run(gctx, batches)) })
	g.Go(func() error { return a.keeper.Run(gctx) })
	g.Go(func() error { return a.followStream(gctx) })
	g.Go(func() error {
		return a.ctl.Run(gctx, mesh.Inputs{Batches: batches, Resync: a.set.Resync, Connected: a.conn.Connected, Publish: a.publish,
			Reopen: a.reopen})
	})
	g.Go(func() error { return a.keepDevice(gctx) })
	g.Go(func() error { return a.heartbeat(gctx) })
	if a.saver != nil {
		g.Go(func() error { return a.saver.Run(gctx) })
	}
	err := g.Wait()
	if err == nil && ctx.Err() != nil {
		a.log.Info("stopping; the claim stays in the bucket", "prefix", a.set.Prefix)
	}
	return err
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
