package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
	"github.com/ikto-mesh/ikto/pkg/store"
)

// snapshot is what the loop publishes for the status handler after each pass.
type snapshot struct {
	// table's View is the outcome of the last pass, built only when the
	// status handler asks (it is the one Table method safe from there).
	table         *peer.Table
	synced        bool
	lastReconcile time.Time
}

// view is the outcome of the last pass; empty before the first.
func (s *snapshot) view() peer.View {
	if s.table == nil {
		return peer.View{}
	}
	return s.table.View()
}

// loop owns the table and the reconciler. Watch batches and the resync timer
// only wake it; each pass re-decides the records that changed and hands the
// peers that changed to the reconciler, so a watch event costs O(changes)
// whatever the size of the mesh; a resync pass compares the whole device.
// Nothing is applied before the first snapshot, so a restarting agent never
// removes peers it has simply not heard about yet.
func (a *Agent) loop(ctx context.Context, batches <-chan store.Batch) error {
	table := peer.NewTable(peer.Rules{Mesh: a.set.Mesh, Bits: a.set.Prefix.Bits()}, a.key.PublicKey(), a.prefix)
	rec := reconcile.New(a.dev)
	logged := map[string]uint64{} // rejections already logged: key → revision
	synced := false
	resync := time.NewTicker(a.set.Resync)
	defer resync.Stop()

	for {
		refresh := false
		select {
		case <-ctx.Done():
			return nil
		case b := <-batches:
			synced = a.applyBatch(table, b) || synced
			// A burst of events becomes one pass: take what is already queued.
		drain:
			for {
				select {
				case b := <-batches:
					synced = a.applyBatch(table, b) || synced
				default:
					break drain
				}
			}
		case <-resync.C:
			// While NATS is unreachable the device is left exactly as it is.
			if !synced || !a.connected() {
				continue
			}
			refresh = true
		}
		if !synced {
			continue
		}
		first := !a.published.Load().synced
		if err := a.pass(table, rec, refresh, logged); err != nil {
			return err
		}
		if first && a.opt.Ready != nil {
			a.opt.Ready()
		}
	}
}

// connected reports whether NATS is reachable right now.
func (a *Agent) connected() bool { return a.nc != nil && a.nc.IsConnected() }

// applyBatch loads b into the table and reports whether it was a snapshot.
func (a *Agent) applyBatch(t *peer.Table, b store.Batch) bool {
	if b.Snapshot {
		t.Reset()
		a.metrics.WatchSnapshots.Inc()
	} else {
		a.metrics.WatchEvents.Add(float64(len(b.Entries)))
	}
	for _, e := range b.Entries {
		if e.Deleted {
			t.Delete(e.Key)
		} else {
			t.Put(e.Key, e.Value, e.Revision)
		}
	}
	return b.Snapshot
}

// pass is one reconciliation. It returns an error only when the agent must
// stop: this host was evicted or its prefix taken over. A failed device call
// is logged and repaired by a later pass.
func (a *Agent) pass(table *peer.Table, rec *reconcile.Reconciler, refresh bool, logged map[string]uint64) error {
	d := table.Update()
	a.logRejections(d.Rejected, logged)

	switch {
	case d.SelfRevoked:
		return a.evict(rec, "its public key "+a.self.PublicKey+" was revoked")
	case d.SelfRejected != nil:
		a.removeAll(rec)
		return fmt.Errorf("the record at %s is no longer ours (%s): %w", a.prefix, d.SelfRejected.Detail, ErrTakenOver)
	case d.Self == nil:
		return a.evict(rec, "its record "+peer.Key(a.prefix)+" was deleted")
	case d.Self.PublicKey != table.SelfKey():
		a.removeAll(rec)
		return fmt.Errorf("%s is now held by %q (public key %s): %w", a.prefix, d.Self.Name, d.Self.PublicKey, ErrTakenOver)
	}

	ka := a.set.Keepalive
	for _, c := range d.Changes {
		if c.New == nil {
			rec.Unset(c.PublicKey)
			continue
		}
		rec.Set(reconcile.Spec{PublicKey: c.PublicKey, Endpoint: c.New.Endpoint, AllowedIPs: []netip.Prefix{c.New.Prefix}, Keepalive: ka})
	}
	a.metrics.PeersDesired.Set(float64(d.Peers))
	res, err := rec.Sync(refresh)
	a.metrics.ReconcileDuration.Observe(res.Duration.Seconds())
	if err != nil {
		a.metrics.Reconciles.WithLabelValues("error").Inc()
		a.log.Error("configure device failed; will retry", "device", a.dev.Name(), "err", err)
	} else {
		a.metrics.Reconciles.WithLabelValues("ok").Inc()
		a.metrics.PeersConfigured.Set(float64(rec.Len()))
		a.metrics.PeerChanges.WithLabelValues("add").Add(float64(len(res.Plan.Add)))
		a.metrics.PeerChanges.WithLabelValues("update").Add(float64(len(res.Plan.Update)))
		a.metrics.PeerChanges.WithLabelValues("remove").Add(float64(len(res.Plan.Remove)))
		a.logPlan(res, table, d)
		// Both want every peer: the View is built only for them.
		if len(a.set.Hooks) > 0 {
			a.notifyHooks(table.View())
		}
		if a.saver != nil {
			a.saveSnapshot(table.View().Peers)
		}
	}
	a.published.Store(&snapshot{table: table, synced: true, lastReconcile: time.Now()})
	return nil
}

func (a *Agent) desired(peers map[wgtypes.Key]peer.Accepted) map[wgtypes.Key]reconcile.Spec {
	ka := a.set.Keepalive
	out := make(map[wgtypes.Key]reconcile.Spec, len(peers))
	for k, p := range peers {
		out[k] = reconcile.Spec{PublicKey: k, Endpoint: p.Endpoint, AllowedIPs: []netip.Prefix{p.Prefix}, Keepalive: ka}
	}
	return out
}

func (a *Agent) evict(rec *reconcile.Reconciler, why string) error {
	a.removeAll(rec)
	a.log.Error("this host was evicted: "+why+"; every peer was removed. To rejoin, create a new key and prefix with ikto-init",
		"prefix", a.prefix)
	return fmt.Errorf("%w: %s", ErrEvicted, why)
}

// saveSnapshot hands the accepted set to the snapshot writer when it differs
// from the last one handed over (by key and revision): a resync or a record
// that changed nothing costs no write. The device was just configured with
// these peers, so the snapshot never runs ahead of it.
func (a *Agent) saveSnapshot(peers map[wgtypes.Key]peer.Accepted) {
	if a.saver == nil || sameRevisions(a.saved, peers) {
		return
	}
	a.saved = make(map[string]uint64, len(peers))
	list := make([]peer.Accepted, 0, len(peers))
	for _, p := range peers {
		a.saved[p.Key] = p.Revision
		list = append(list, p)
	}
	a.saver.Offer(a.identity(), list)
}

func sameRevisions(saved map[string]uint64, peers map[wgtypes.Key]peer.Accepted) bool {
	if saved == nil || len(saved) != len(peers) {
		return false
	}
	for _, p := range peers {
		if rev, ok := saved[p.Key]; !ok || rev != p.Revision {
			return false
		}
	}
	return true
}

// removeAll takes every peer off the device and forgets the snapshot: this
// host is out of the mesh, and a restart must not bring the mesh back.
func (a *Agent) removeAll(rec *reconcile.Reconciler) {
	a.discardSnapshot()
	res, err := rec.Apply(nil, true)
	if err != nil {
		a.log.Error("remove peers failed", "device", a.dev.Name(), "err", err)
		return
	}
	a.log.Info("removed every peer", "device", a.dev.Name(), "removed", len(res.Plan.Remove))
	a.notifyHooks(peer.View{})
}

// logPlan logs each changed peer when there are few (the common case: a
// join or a leave), and a summary when there are many (initial sync).
func (a *Agent) logPlan(res reconcile.Result, table *peer.Table, d peer.Delta) {
	p := res.Plan
	n := len(p.Add) + len(p.Update) + len(p.Remove)
	if n == 0 {
		return
	}
	if n > 8 {
		a.log.Info("peers configured", "added", len(p.Add), "updated", len(p.Update), "removed", len(p.Remove),
			"peers", d.Peers, "took", res.Duration.Round(time.Microsecond))
		return
	}
	for _, s := range p.Add {
		r, _ := table.Peer(s.PublicKey)
		a.log.Info("peer added", "peer", r.Name, "prefix", r.Prefix, "endpoint", s.Endpoint, "key", r.Key)
	}
	for _, s := range p.Update {
		r, _ := table.Peer(s.PublicKey)
		a.log.Info("peer updated", "peer", r.Name, "prefix", r.Prefix, "endpoint", s.Endpoint, "key", r.Key)
	}
	for _, k := range p.Remove {
		if r := removed(d, k); r != nil {
			a.log.Info("peer removed", "peer", r.Name, "prefix", r.Prefix, "key", r.Key)
		} else {
			a.log.Info("peer removed", "public_key", k.String(), "why", "not in the bucket")
		}
	}
}

// removed is the record whose peer k this pass took away, if the bucket
// still had it at the previous pass.
func removed(d peer.Delta, k wgtypes.Key) *peer.Accepted {
	for _, c := range d.Changes {
		if c.PublicKey == k {
			return c.Old
		}
	}
	return nil
}

// logRejections logs and counts each rejected record once per revision.
func (a *Agent) logRejections(rejected []peer.Rejection, logged map[string]uint64) {
	seen := make(map[string]bool, len(rejected))
	now := make(map[peer.Reason]int, len(peer.Reasons))
	for _, r := range rejected {
		seen[r.Key] = true
		now[r.Reason]++
		if rev, ok := logged[r.Key]; ok && rev == r.Revision {
			continue
		}
		logged[r.Key] = r.Revision
		a.metrics.Rejections.WithLabelValues(string(r.Reason)).Inc()
		a.log.Warn("record rejected", "key", r.Key, "revision", r.Revision, "reason", string(r.Reason), "detail", r.Detail)
	}
	for k := range logged {
		if !seen[k] {
			delete(logged, k)
		}
	}
	for _, r := range peer.Reasons {
		a.metrics.RecordsRejected.WithLabelValues(string(r)).Set(float64(now[r]))
	}
}
