// Package mesh is the agent's controller: it owns the table of bucket
// records, the reconciler that drives the device, and the decision rules.
// Batches from the bucket's watch go in (Load); each pass (Pass, or the loop
// in Run) resolves the records, decides whether this host is still a member,
// applies the difference to the device and returns one immutable Outcome,
// which hooks, the snapshot saver, metrics and /v1/status consume. Restoring
// the mesh from a snapshot (add-only) and standing down (remove every peer)
// are calls on the same controller: there is one path to the device.
package mesh

import (
	"log/slog"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Self is the host the controller runs for.
type Self struct {
	Key    wgtypes.Key  // its public key
	Prefix netip.Prefix // the prefix it claims
	Rules  peer.Rules   // what every record is checked against
	// Keepalive is set on every peer (0: off).
	Keepalive time.Duration
}

// Options tune a controller.
type Options struct {
	Log *slog.Logger
	// KeepView makes every pass's Outcome carry the whole accepted View.
	// Building it costs O(peers) per pass that changed something, so it is
	// off where nobody reads it (benchmarks with thousands of agents).
	KeepView bool
}

// Controller keeps one device's peers equal to the bucket's accepted records.
// Not safe for concurrent use: one goroutine (Run's) calls it; others read
// its Outcomes.
type Controller struct {
	self  Self
	log   *slog.Logger
	dev   wgdev.Device
	table *peer.Table
	rec   *reconcile.Reconciler
	keep  bool

	loaded            bool              // a snapshot of the bucket is in the table
	logged            map[string]uint64 // rejections already reported: key → revision
	seq               uint64
	events, snapshots int // folded in since the last pass
}

// New returns a controller for dev with an empty table. Nothing touches the
// device until a pass, Restore or StandDown.
func New(self Self, dev wgdev.Device, opt Options) *Controller {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		self: self, log: opt.Log, dev: dev, keep: opt.KeepView,
		table:  peer.NewTable(self.Rules, self.Key, self.Prefix),
		rec:    reconcile.New(dev),
		logged: map[string]uint64{},
	}
}

// Device is the device the controller drives.
func (c *Controller) Device() wgdev.Device { return c.dev }

// Loaded reports whether a whole-bucket snapshot has been loaded: until then
// a pass would remove peers it has simply not heard about yet.
func (c *Controller) Loaded() bool { return c.loaded }

// Load folds one watch batch into the table. A snapshot batch replaces
// everything known before.
func (c *Controller) Load(b bucket.Batch) {
	if b.Snapshot {
		c.table.Reset()
		c.loaded = true
		c.snapshots++
	} else {
		c.events += len(b.Entries)
	}
	for _, e := range b.Entries {
		if e.Deleted {
			c.table.Delete(e.Key)
		} else {
			c.table.Put(e.Key, e.Value, e.Revision)
		}
	}
}

// Pass is one reconciliation: it re-decides the records that changed since
// the last pass, hands the peers that changed to the reconciler (with
// refresh, the device is read and compared whole, repairing drift), and
// reports. A pass whose verdict is not Member has already stood down. A
// failed device call is reported in DeviceErr and repaired by a later pass.
// Call it only once Loaded.
func (c *Controller) Pass(refresh bool) Outcome {
	d := c.table.Update()
	o := c.begin()
	o.Refresh, o.Peers, o.Changes, o.Rejected = refresh, d.Peers, d.Changes, d.Rejected
	o.NewRejections = c.noteRejections(d.Rejected)
	if v, why := Decide(d, c.self.Key, c.self.Prefix); v != Member {
		return c.standDown(o, v, why)
	}
	for _, ch := range d.Changes {
		if ch.New == nil {
			c.rec.Unset(ch.PublicKey)
		} else {
			c.rec.Set(c.spec(*ch.New))
		}
	}
	res, err := c.rec.Sync(refresh)
	o.State, o.Plan, o.Refresh, o.Took, o.DeviceErr = StateSynced, res.Plan, res.Refresh, res.Duration, err
	if err != nil {
		c.log.Error("configure device failed; will retry", "device", c.dev.Name(), "err", err)
	} else {
		o.Configured = c.rec.Len()
		c.logPlan(res, d)
	}
	if c.keep {
		v := c.table.View()
		o.View = &v
	}
	return o
}

// Restore puts peers (the accepted records of a local snapshot) on the device
// before the bucket can be read. It only adds: a peer the device already has
// (a kernel device that outlived the agent) stays as it is until the bucket
// says otherwise, so a restart never takes a working peer away. The first
// pass after the bucket's snapshot compares the whole device again.
func (c *Controller) Restore(peers map[wgtypes.Key]peer.Accepted) Outcome {
	o := c.begin()
	o.State, o.Peers, o.View = StateRestored, len(peers), &peer.View{Peers: peers}
	specs := make(map[wgtypes.Key]reconcile.Spec, len(peers))
	for k, p := range peers {
		specs[k] = c.spec(p)
	}
	res, err := c.rec.AddMissing(specs)
	o.Plan, o.Refresh, o.Took, o.DeviceErr = res.Plan, true, res.Duration, err
	if err == nil {
		o.Configured = len(peers)
	}
	return o
}

// StandDown takes every peer off the device: this host is out of the mesh
// (verdict v, for the reason why).
func (c *Controller) StandDown(v Verdict, why string) Outcome {
	return c.standDown(c.begin(), v, why)
}

func (c *Controller) standDown(o Outcome, v Verdict, why string) Outcome {
	o.State, o.Verdict, o.Why, o.View, o.Peers = StateStandingDown, v, why, &peer.View{}, 0
	res, err := c.rec.Apply(nil, true)
	o.Plan, o.Refresh, o.Took, o.DeviceErr = res.Plan, true, res.Duration, err
	if err != nil {
		c.log.Error("remove peers failed", "device", c.dev.Name(), "err", err)
	} else {
		c.log.Info("removed every peer", "device", c.dev.Name(), "removed", len(res.Plan.Remove))
	}
	if v == Evicted {
		c.log.Error("this host was evicted: "+why+"; every peer was removed. To rejoin, create a new key and prefix with ikto-init",
			"prefix", c.self.Prefix)
	}
	return o
}

// begin starts the outcome of a new pass with what every pass reports.
func (c *Controller) begin() Outcome {
	c.seq++
	o := Outcome{Seq: c.seq, At: time.Now(), Events: c.events, Snapshots: c.snapshots}
	c.events, c.snapshots = 0, 0
	return o
}

// spec is how an accepted record is configured on the device.
func (c *Controller) spec(p peer.Accepted) reconcile.Spec {
	return reconcile.Spec{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: []netip.Prefix{p.Prefix}, Keepalive: c.self.Keepalive}
}
