package agent

import (
	"github.com/ikto-mesh/ikto/pkg/mesh"
)

// publish hands one outcome to everything that follows the mesh. It runs in
// the controller's goroutine and never blocks: the hooks and the snapshot
// saver only take the newest state and do their work elsewhere.
func (a *Agent) publish(o mesh.Outcome) {
	a.metrics.Observe(o)
	if a.keeper != nil {
		a.keeper.Request(o.Repair)
	}
	prev := a.last.Load()
	// Ready once the device carries a mesh: the bucket's or the snapshot's.
	first := !a.ready && (o.State == mesh.StateSynced || o.State == mesh.StateRestored) && o.DeviceErr == nil
	a.ready = a.ready || first
	a.last.Store(&o)
	a.notifySystemd(*prev, o, first)
	if o.DeviceErr != nil {
		return // the device is not known to carry this outcome's peers
	}
	if o.View != nil {
		a.hooks.Update(hookPeers(o.View.Peers))
	}
	switch {
	case a.saver == nil:
	case o.State == mesh.StateStandingDown:
		// Out of the mesh: a restart must not bring the mesh back.
		a.discardSnapshot()
	case o.Synced() && o.View != nil:
		a.saver.OfferPeers(a.identity(), o.View.Peers)
	}
	if first && a.opt.Ready != nil {
		a.opt.Ready()
	}
}
