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

// OwnRecord is this host's record as written to the bucket.
type OwnRecord struct {
	Key      string
	Value    []byte
	Revision uint64
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
	revision          uint64            // the highest bucket revision folded in
	logged            map[string]uint64 // rejections already reported: key → revision
	seq               uint64
	events, snapshots int // folded in since the last pass
	ended             ContactEnds
	restarts          int

	contest contest
	// rotating is a key rotation under way (Rotate).
	rotating *rotation
	// pending is what loads left for the next pass to ask.
	pending pending
	// tune and lost carry requests from other goroutines to Run (Tune,
	// DeviceLost).
	tune chan Tuning
	lost chan chan struct{}
	// selfRev and selfSeq are the revision and seq of this host's own
	// record when last held; contacts are the peers whose first handshake
	// is being orchestrated.
	selfRev  uint64
	selfSeq  uint64
	contacts map[wgtypes.Key]*contact
	// initiating counts the contacts whose handshake this end starts, or
	// will if the other end does not.
	initiating int
	// waiting are the peers initiate found no room for, in the order it
	// was asked: each starts as a contact ends (startWaiting).
	waiting    []waitingContact
	waitingFor map[wgtypes.Key]struct{} // the keys in waiting
	// restored are the peers Restore put back, until the bucket's first
	// snapshot: the table has none of them before it, and waiting ones
	// among them still start (startWaiting).
	restored map[wgtypes.Key]peer.Accepted
	// dropped is when each peer was last taken off the device: the other
	// end may still hold a session with us that it will not renew.
	dropped map[wgtypes.Key]time.Time
	// refused is when the device last refused an initiation from each
	// endpoint, for refusedWithin (noteRefused); opened is when the device
	// was taken into use: a host whose record is older may have sent its
	// initiation before, and met no device to refuse it (beginContact).
	refused map[netip.AddrPort]time.Time
	opened  time.Time
}

// pending is the per-pass scratch: what loads since the last pass leave for
// it. A pass takes it whole at its start, whichever way the pass ends, so
// nothing seen before one pass is acted on by a later one.
type pending struct {
	snapshot bool        // a snapshot of the bucket was loaded: ask for write-backs
	lostRevs []peer.Lost // revocations that snapshot lacked
}

// New returns a controller for dev with an empty table. Nothing touches the
// device until a pass, Restore or StandDown; dev may be nil until UseDevice.
func New(self Self, dev wgdev.Device, opt Options) *Controller {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		self: self, log: opt.Log, dev: dev, keep: opt.KeepView, opened: time.Now(),
		table:      peer.NewTable(self.Rules, self.Key, self.Prefix),
		rec:        reconcile.New(dev),
		logged:     map[string]uint64{},
		contacts:   map[wgtypes.Key]*contact{},
		waitingFor: map[wgtypes.Key]struct{}{},
		dropped:    map[wgtypes.Key]time.Time{},
		refused:    map[netip.AddrPort]time.Time{},
		tune:       make(chan Tuning, 1),
		lost:       make(chan chan struct{}, 1),
	}
	return c
}

// UseDevice gives a controller made before its device (New with a nil
// device) the device it drives. Call it before anything else touches the
// device: Restore, a pass, Run.
func (c *Controller) UseDevice(dev wgdev.Device) {
	c.dev = dev
	c.rec.Rebind(dev)
	c.opened = time.Now()
}

// RecallOwn tells the table of this host's record as its claim wrote it: a
// statement seen before the watch shows it, so a command that removes it
// counts from the first snapshot on. Call it before Run.
func (c *Controller) RecallOwn(own OwnRecord) {
	c.table.Recall(own.Key, own.Value, own.Revision)
}

// ReplaceDevice drives dev from now on, in place of a device that is gone
// (deleted, or its process died). The next pass writes every peer to it, and
// this host starts the first handshake with each: the other ends still hold
// sessions with the old device and would not.
func (c *Controller) ReplaceDevice(dev wgdev.Device) {
	c.dev = dev
	c.rec.Rebind(dev)
	now := time.Now()
	c.opened = now
	for k, p := range c.table.View().Peers {
		c.initiate(k, now, true)
		if !c.contest.lost {
			c.rec.Set(c.spec(p))
		}
	}
}

// Loaded reports whether a whole-bucket snapshot has been loaded: until then
// a pass would remove peers it has simply not heard about yet.
func (c *Controller) Loaded() bool { return c.loaded }

// Load folds one watch batch into the table. A snapshot batch replaces
// everything known before.
func (c *Controller) Load(b peer.Batch) {
	if b.Snapshot {
		c.table.Reset()
		c.loaded, c.restored = true, nil
		c.snapshots++
		c.revision = b.Revision
	} else {
		c.events += len(b.Entries)
	}
	writes := make([]peer.Write, len(b.Entries))
	for i, e := range b.Entries {
		c.revision = max(c.revision, e.Revision)
		writes[i] = peer.Write{Key: e.Key, Value: e.Value, Revision: e.Revision, Deleted: e.Deleted}
	}
	c.table.Load(writes)
	if b.Snapshot {
		c.pending = pending{snapshot: true, lostRevs: c.lostRevocations(b.Entries)}
	}
}

// Pass is one reconciliation: it re-decides the records that changed since
// the last pass, judges this host's own claim, hands the peers that changed
// to the reconciler (with refresh, the device is read and compared whole,
// repairing drift), and reports. An eviction stands down (Err is then set);
// a missing or contested claim keeps the peers and asks for a Repair; a
// contest lost stands down without ending the agent, until the record is
// ours again. A failed device call is reported in DeviceErr and repaired by
// a later pass. Call it only once Loaded.
func (c *Controller) Pass(refresh bool) Outcome {
	d := c.table.Update()
	now := time.Now()
	o := c.begin()
	p := c.pending
	c.pending = pending{}
	o.Refresh, o.Peers, o.Changes, o.Rejected = refresh, d.Peers, d.Changes, d.Rejected
	o.NewRejections = c.noteRejections(d.Rejected)
	o.Claim, o.Why = Judge(d, c.self.Key, c.self.Prefix)
	if stop := c.heal(&o, d, now); stop {
		return c.standDown(o, o.Claim, o.Why)
	}
	// Asked once per snapshot: the keeper carries it until it is done.
	if p.snapshot {
		o.Repair.Revoke, o.Repair.WriteBack = p.lostRevs, c.writeBack()
	}
	if c.contest.lost {
		if o.Claim != ClaimHeld {
			o.State, o.Claim, o.View = StateStandingDown, ClaimLost, &peer.View{}
			return o
		}
		c.contest.held(now)
		c.log.Info("this host's record is its own again; rejoining the mesh", "prefix", c.self.Prefix)
		return c.resume(o)
	}
	if o.Claim == ClaimHeld {
		c.contest.held(now)
	}
	c.applyChanges(d, now)
	res, err := c.rec.Sync(refresh)
	if err == nil {
		res, err = c.startRefusedAfter(res)
	}
	return c.finish(o, d, res, err)
}

// startRefusedAfter starts, right after the device took this pass's new
// peers, those whose initiation it refused before it had them: the report
// of such a refusal is sent before the device could take the peer, so it is
// in by the time the device call returns (but for a handshake worker
// preempted between the two). A peer taken
// waiting, without its endpoint, is started before its traffic has much
// chance to spend WireGuard's initiation on the missing endpoint — and a
// restart drops what it queued (startRefused).
func (c *Controller) startRefusedAfter(res reconcile.Result) (reconcile.Result, error) {
	c.drainRefusals()
	if !c.startRefused(time.Now()) {
		return res, nil
	}
	more, err := c.rec.Sync(false) // guessing peers get their keepalive
	res.Plan.Update = append(res.Plan.Update, more.Plan.Update...)
	res.Duration += more.Duration
	return res, err
}

// applyChanges hands the pass's peer changes to the reconciler. A peer new
// to the device begins its first contact (§5).
func (c *Controller) applyChanges(d peer.Delta, now time.Time) {
	var hs map[wgtypes.Key]time.Time
	sessions := func() map[wgtypes.Key]time.Time {
		if hs == nil {
			hs = c.sessions()
		}
		return hs
	}
	for _, ch := range d.Changes {
		switch {
		case ch.New == nil:
			c.endContact(ch.PublicKey)
			c.drop(ch.PublicKey, now)
		case ch.Old == nil:
			c.beginContact(*ch.New, now, sessions)
			c.rec.Set(c.spec(*ch.New))
		default:
			c.rec.Set(c.spec(*ch.New))
		}
	}
	for k, at := range c.dropped {
		if now.Sub(at) >= sessionAge {
			delete(c.dropped, k)
		}
	}
}

// setKeepalive changes the keepalive of every peer; the next pass writes it.
func (c *Controller) setKeepalive(d time.Duration) {
	c.self.Keepalive = d
	for _, p := range c.table.View().Peers {
		c.rec.Set(c.spec(p))
	}
}

// drop takes peer k off the device at the next pass.
func (c *Controller) drop(k wgtypes.Key, now time.Time) {
	c.rec.Unset(k)
	c.dropped[k] = now
}

// finish completes the outcome of a pass that drove the device.
func (c *Controller) finish(o Outcome, d peer.Delta, res reconcile.Result, err error) Outcome {
	o.State, o.Plan, o.Refresh, o.Took, o.DeviceErr = StateSynced, res.Plan, res.Refresh, res.Duration, err
	o.Contacts = c.pendingContacts()
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

// begin starts the outcome of a new pass with what every pass reports.
func (c *Controller) begin() Outcome {
	c.seq++
	o := Outcome{Seq: c.seq, At: time.Now(), Events: c.events, Snapshots: c.snapshots, Revision: c.revision,
		Ended: c.ended, Restarts: c.restarts}
	c.events, c.snapshots, c.ended, c.restarts = 0, 0, ContactEnds{}, 0
	return o
}

// spec is how an accepted record is configured on the device (during its
// first contact, as contactSpec says).
func (c *Controller) spec(p peer.Accepted) reconcile.Spec {
	return c.contactSpec(reconcile.Spec{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: []netip.Prefix{p.Prefix}, Keepalive: c.self.Keepalive})
}
