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
	// Unannounced: this host's claim left its record as it was at this
	// start (another record carries its key, bucket.ClaimKeep), so the
	// record is not the newest and its peers do not know its device is
	// new. It starts the first handshake with every peer of its first
	// snapshot, whatever the revisions (§5).
	Unannounced bool
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

	// oursLast is set while the last record seen at our key was our own:
	// only then is a delete there a command. The agent claimed before it
	// watches, so it starts set.
	oursLast bool
	contest  contest
	// vanished are peers whose records went without a command — missing
	// from a fresh snapshot (a re-created bucket), or overwritten by a value
	// that is not their record: bound to those records until their hosts
	// write them back, a command, or the grace ends (see applyChanges).
	vanished map[wgtypes.Key]vanished
	// snapKeys are the keys, markers included, of the snapshot loaded since
	// the last pass; nil when none was.
	snapKeys map[string]bool
	// selfRev is the revision of this host's own record when last held;
	// contacts are the peers whose first handshake is being orchestrated.
	selfRev uint64
	// startRev: with Options.Unannounced, the first snapshot's revision:
	// this end starts the first handshake with every record up to it.
	startRev    uint64
	unannounced bool
	contacts    map[wgtypes.Key]*contact
	// initiating counts the contacts whose handshake this end starts.
	initiating int
	// dropped is when each peer was last taken off the device: the other
	// end may still hold a session with us that it will not renew.
	dropped map[wgtypes.Key]time.Time
	// restored are the records Restore put on the device, until the first
	// pass: what the agent knew before it started, so a record that went
	// without a command while it was down binds its key as it would have.
	restored map[wgtypes.Key]peer.Accepted
	// lostRevs are the revocations the last snapshot lacked, until a pass
	// asks the keeper to write them back.
	lostRevs []wgtypes.Key
}

// vanished is one peer bound to the record it had, which went without a
// command.
type vanished struct {
	key   string        // where its record was
	rec   peer.Accepted // the record, as it is configured
	until time.Time
	// moveAfter is when a record of the key under another prefix may be
	// applied after all: at until for a record overwritten (someone wrote
	// over it: a copy elsewhere is suspect for the whole grace), sooner for
	// one missing from a fresh snapshot (a bucket made again, where the host
	// may simply have moved meanwhile).
	moveAfter time.Time
	off       bool // another host's record is accepted at key: not on the device
}

// MoveHold is how long a key whose record is missing from a fresh snapshot
// stays bound before a record of it under another prefix is applied: time
// for a live host to write its record back (and release any copy), not the
// whole VanishGrace a host that moved while the bucket was lost would wait.
const MoveHold = 5 * time.Second

// VanishGrace is how long a peer whose record vanished without a delete
// stays on the device: long enough for a live host to write its record back
// into a re-created bucket, short enough that a dead host's peer goes.
const VanishGrace = 30 * time.Second

// New returns a controller for dev with an empty table. Nothing touches the
// device until a pass, Restore or StandDown.
func New(self Self, dev wgdev.Device, opt Options) *Controller {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		self: self, log: opt.Log, dev: dev, keep: opt.KeepView,
		table:       peer.NewTable(self.Rules, self.Key, self.Prefix),
		rec:         reconcile.New(dev),
		logged:      map[string]uint64{},
		oursLast:    true,
		vanished:    map[wgtypes.Key]vanished{},
		unannounced: opt.Unannounced,
		contacts:    map[wgtypes.Key]*contact{},
		dropped:     map[wgtypes.Key]time.Time{},
	}
}

// Device is the device the controller drives.
func (c *Controller) Device() wgdev.Device { return c.dev }

// ReplaceDevice drives dev from now on, in place of a device that is gone
// (deleted, or its process died). The next pass writes every peer to it, and
// this host starts the first handshake with each: the other ends still hold
// sessions with the old device and would not.
func (c *Controller) ReplaceDevice(dev wgdev.Device) {
	c.dev = dev
	c.rec.Rebind(dev)
	now := time.Now()
	for k := range c.configured() {
		c.initiate(k, now)
		if p, ok := c.current(k); ok && !c.contest.lost {
			c.rec.Set(c.spec(p))
		}
	}
}

// configured is every peer this host configures: the table's accepted peers
// and the bound ones.
func (c *Controller) configured() map[wgtypes.Key]struct{} {
	ks := make(map[wgtypes.Key]struct{}, len(c.table.View().Peers)+len(c.vanished))
	for k := range c.table.View().Peers {
		ks[k] = struct{}{}
	}
	for k := range c.vanished {
		ks[k] = struct{}{}
	}
	return ks
}

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
		c.snapKeys = make(map[string]bool, len(b.Entries))
		c.revision = b.Revision
		if c.unannounced && c.snapshots == 1 {
			c.startRev = b.Revision
		}
	} else {
		c.events += len(b.Entries)
	}
	for _, e := range b.Entries {
		c.revision = max(c.revision, e.Revision)
		if b.Snapshot {
			c.snapKeys[e.Key] = true
		}
		switch {
		case e.Released:
			c.table.Release(e.Key)
		case e.Deleted:
			c.table.Delete(e.Key)
		default:
			c.table.Put(e.Key, e.Value, e.Revision)
		}
	}
	if b.Snapshot {
		c.lostRevs = c.lostRevocations()
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
	o.Refresh, o.Peers, o.Changes, o.Rejected = refresh, d.Peers, d.Changes, d.Rejected
	o.NewRejections = c.noteRejections(d.Rejected)
	o.Claim, o.Why = Judge(d, c.self.Key, c.self.Prefix, c.oursLast)
	switch o.Claim {
	case ClaimEvicted:
		return c.standDown(o, ClaimEvicted, o.Why)
	case ClaimHeld:
		c.oursLast, c.selfRev = true, d.Self.Revision
		o.Repair.Release, o.Repair.Held = stale(d.Rejected), true
	case ClaimMissing:
		// A stranger's copy of our key is the key's only record now, which
		// every agent routes: it goes first (the keeper leaves our own
		// leftovers until the claim is held).
		o.Repair.Reclaim, o.Repair.Release = true, stale(d.Rejected)
	case ClaimContested:
		c.oursLast = false
		if !c.contest.lost {
			rev, giveUp := c.contest.next(foreignRevision(d), now)
			if giveUp {
				c.contest.lost = true
				c.log.Error("another key keeps taking this host's prefix; standing down until the record is ours again. "+
					"If that host should not hold it, evict it with ikto-admin evict", "prefix", c.self.Prefix, "why", o.Why)
				c.dropVanished()
				return c.standDown(o, ClaimLost, o.Why)
			}
			o.Repair.Defend, o.Repair.Release = rev, stale(d.Rejected)
			c.log.Warn("this host's claim is contested; restoring its record", "prefix", c.self.Prefix, "why", o.Why, "revision", rev)
		}
	}
	// Asked once per snapshot: the keeper carries it until it is done.
	o.Repair.Revoke, c.lostRevs = c.lostRevs, nil
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
	return c.finish(o, d, res, err)
}

// applyChanges hands the pass's peer changes to the reconciler. A peer whose
// record went without a command — missing from a fresh snapshot (a bucket
// made again), or overwritten by something that is not its record (garbage,
// another key's record) — stays bound to the prefix it had for VanishGrace:
// absence is not a command, and its host writes the record back. While bound,
// it stays on the device unless another host's record is accepted at its
// prefix, and a record of its key at another prefix is not applied: that is
// a copy its host could not release yet (see bindings), not a move.
func (c *Controller) applyChanges(d peer.Delta, now time.Time) {
	var hs map[wgtypes.Key]time.Time
	sessions := func() map[wgtypes.Key]time.Time {
		if hs == nil {
			hs = c.sessions()
		}
		return hs
	}
	for _, ch := range d.Changes {
		k := ch.PublicKey
		if ch.New == nil {
			c.endContact(k)
		}
		v, bound := c.vanished[k]
		old := ch.Old
		if r, ok := c.restored[k]; ok && old == nil {
			old = &r
		}
		switch {
		case bound && ch.New != nil && ch.New.Key != v.key:
			if now.Before(v.moveAfter) {
				c.holdMove(v, *ch.New)
			} // else bindings below applies it
		case bound && ch.New != nil:
			// Its record is back where it was.
			delete(c.vanished, k)
			if v.off {
				c.beginContact(*ch.New, now, sessions)
			}
			c.rec.Set(c.spec(*ch.New))
		case bound:
			// The copy went too; the binding stands.
		case old != nil && (ch.New == nil || ch.New.Key != old.Key) && c.displaced(k, old.Key):
			v := vanished{key: old.Key, rec: *old, until: now.Add(VanishGrace)}
			v.moveAfter = v.until
			if _, _, present := c.table.At(old.Key); !present {
				v.moveAfter = now.Add(MoveHold)
			}
			c.vanished[k] = v
			c.log.Warn("peer's record went without a delete; keeping the peer at its prefix while its host writes it back",
				"peer", old.Name, "prefix", old.Prefix, "key", old.Key, "for", VanishGrace)
			if ch.Old == nil {
				c.rec.Set(c.spec(*old)) // restored: on the device, not yet desired
			}
			if ch.New != nil {
				c.holdMove(v, *ch.New)
			}
		case ch.New != nil:
			if ch.Old == nil {
				c.beginContact(*ch.New, now, sessions)
			}
			c.rec.Set(c.spec(*ch.New))
		default:
			c.drop(k, now)
		}
	}
	c.bindings(now, sessions)
	c.restored = nil
	for k, at := range c.dropped {
		if now.Sub(at) >= sessionAge {
			delete(c.dropped, k)
		}
	}
	c.snapKeys = nil
}

// displaced reports whether the record of k at key went without a command:
// missing from the snapshot just loaded, or overwritten by a value that is
// not a record of k. A delete marker (an eviction, a release) is a command.
func (c *Controller) displaced(k wgtypes.Key, key string) bool {
	if c.snapKeys != nil && !c.snapKeys[key] {
		return true
	}
	r, valid, present := c.table.At(key)
	return present && (!valid || r.PublicKey != k)
}

// holdMove logs that a record of a bound peer's key at another prefix waits.
func (c *Controller) holdMove(v vanished, to peer.Accepted) {
	c.log.Warn("a record of this peer's key at another prefix waits until its own record is back or the hold ends (a copy its host has not released yet)",
		"peer", v.rec.Name, "prefix", v.rec.Prefix, "other", to.Key, "until", v.moveAfter.Format(time.RFC3339))
}

// bindings ends or adjusts each bound peer. Its revocation takes the peer
// off; the grace's end (or the hold's, for a record of the key elsewhere)
// hands the key to whatever the table accepts for it. A delete at its prefix
// does neither: it removes what displaced the record (a copy its owner
// released, garbage an operator deleted), which says nothing of the bound
// host, whose record comes back or whose grace ends. Two peers must never carry one
// prefix: another host's record there takes the bound peer off the device
// until that record goes.
func (c *Controller) bindings(now time.Time, sessions func() map[wgtypes.Key]time.Time) {
	for k, v := range c.vanished {
		taken := c.takenFrom(k, v.key)
		switch {
		case c.table.IsRevoked(k):
			c.drop(k, now)
			delete(c.vanished, k)
		case now.After(v.until) || !now.Before(v.moveAfter) && c.movedAway(k, v):
			c.unbind(k, v, now, sessions)
		case taken && !v.off:
			c.drop(k, now)
			v.off = true
			c.vanished[k] = v
		case v.off:
			// Back on the device only with its own record there again:
			// any other value may be what displaced another bound peer.
			r, valid, _ := c.table.At(v.key)
			if !valid || r.PublicKey != k {
				continue
			}
			v.rec, v.off = r, false
			c.vanished[k] = v
			c.beginContact(v.rec, now, sessions)
			c.rec.Set(c.spec(v.rec))
		}
	}
}

// unbind ends k's binding: the table's word goes, whatever it is.
func (c *Controller) unbind(k wgtypes.Key, v vanished, now time.Time, sessions func() map[wgtypes.Key]time.Time) {
	delete(c.vanished, k)
	p, ok := c.table.Peer(k)
	if !ok {
		c.drop(k, now)
		return
	}
	if v.off {
		c.beginContact(p, now, sessions)
	}
	c.rec.Set(c.spec(p))
}

// lostRevocations are the revocations the table keeps that the snapshot
// just loaded lacks (no value, no marker): the bucket lost them. Only a
// snapshot can tell.
func (c *Controller) lostRevocations() []wgtypes.Key {
	var lost []wgtypes.Key
	for _, k := range c.table.RevokedKeys() {
		if !c.snapKeys[peer.RevokedKey(k)] {
			lost = append(lost, k)
		}
	}
	return lost
}

// held counts the bound peers on the device.
func (c *Controller) held() int {
	n := 0
	for _, v := range c.vanished {
		if !v.off {
			n++
		}
	}
	return n
}

// movedAway reports whether the table accepts a record of bound key k under
// another prefix than the one it is bound to.
func (c *Controller) movedAway(k wgtypes.Key, v vanished) bool {
	p, ok := c.table.Peer(k)
	return ok && p.Key != v.key
}

// nextBinding is when the earliest binding changes by itself (a move may be
// applied, or the grace ends); zero when none will.
func (c *Controller) nextBinding(now time.Time) time.Time {
	var next time.Time
	for _, v := range c.vanished {
		at := v.until
		if v.moveAfter.Before(at) && now.Before(v.moveAfter) {
			at = v.moveAfter
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// takenFrom reports whether another host holds key: the table accepts
// another key's record there, which the device then routes. A bound peer is
// off the device while it is (two peers never share a prefix). A copy of a
// key whose older record keeps it elsewhere is routed nowhere, and takes
// nothing from the bound peer.
func (c *Controller) takenFrom(k wgtypes.Key, key string) bool {
	r, valid, _ := c.table.At(key)
	if !valid || r.PublicKey == k {
		return false
	}
	p, ok := c.table.Peer(r.PublicKey)
	return ok && p.Key == key
}

// current is what peer k is configured from: its bound record while it has
// one, else the table's.
func (c *Controller) current(k wgtypes.Key) (peer.Accepted, bool) {
	if v, ok := c.vanished[k]; ok {
		return v.rec, !v.off
	}
	return c.table.Peer(k)
}

// setKeepalive changes the keepalive of every peer; the next pass writes it.
func (c *Controller) setKeepalive(d time.Duration) {
	c.self.Keepalive = d
	for k := range c.configured() {
		if p, ok := c.current(k); ok {
			c.rec.Set(c.spec(p))
		}
	}
}

// drop takes peer k off the device at the next pass.
func (c *Controller) drop(k wgtypes.Key, now time.Time) {
	c.rec.Unset(k)
	c.dropped[k] = now
}

// dropVanished forgets the peers kept after their records vanished.
func (c *Controller) dropVanished() {
	for k := range c.vanished {
		c.rec.Unset(k)
	}
	clear(c.vanished)
}

// finish completes the outcome of a pass that drove the device.
func (c *Controller) finish(o Outcome, d peer.Delta, res reconcile.Result, err error) Outcome {
	o.State, o.Plan, o.Refresh, o.Took, o.DeviceErr, o.Held = StateSynced, res.Plan, res.Refresh, res.Duration, err, c.held()
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

// resume puts every accepted peer back after a stand-down.
func (c *Controller) resume(o Outcome) Outcome {
	c.snapKeys = nil
	v := c.table.View()
	desired := make(map[wgtypes.Key]reconcile.Spec, len(v.Peers))
	for k, p := range v.Peers {
		desired[k] = c.spec(p)
	}
	res, err := c.rec.Apply(desired, true)
	return c.finish(o, peer.Delta{Peers: len(v.Peers)}, res, err)
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
	c.restored = peers
	if err == nil {
		o.Configured = len(peers)
	}
	return o
}

// StandDown takes every peer off the device: this host is out of the mesh
// (claim is ClaimEvicted or ClaimLost, for the reason why).
func (c *Controller) StandDown(claim Claim, why string) Outcome {
	return c.standDown(c.begin(), claim, why)
}

func (c *Controller) standDown(o Outcome, claim Claim, why string) Outcome {
	o.State, o.Claim, o.Why, o.View, o.Peers, o.Repair = StateStandingDown, claim, why, &peer.View{}, 0, bucket.Repair{}
	res, err := c.rec.Apply(nil, true)
	o.Plan, o.Refresh, o.Took, o.DeviceErr = res.Plan, true, res.Duration, err
	if err != nil {
		c.log.Error("remove peers failed", "device", c.dev.Name(), "err", err)
	} else {
		c.log.Info("removed every peer", "device", c.dev.Name(), "removed", len(res.Plan.Remove))
	}
	if claim == ClaimEvicted {
		c.log.Error("this host was evicted: "+why+"; every peer was removed. To rejoin, create a new key and prefix with ikto-init",
			"prefix", c.self.Prefix)
	}
	return o
}

// begin starts the outcome of a new pass with what every pass reports.
func (c *Controller) begin() Outcome {
	c.seq++
	o := Outcome{Seq: c.seq, At: time.Now(), Events: c.events, Snapshots: c.snapshots, Revision: c.revision}
	c.events, c.snapshots = 0, 0
	return o
}

// spec is how an accepted record is configured on the device (during its
// first contact, as contactSpec says).
func (c *Controller) spec(p peer.Accepted) reconcile.Spec {
	return c.contactSpec(reconcile.Spec{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: []netip.Prefix{p.Prefix}, Keepalive: c.self.Keepalive})
}
