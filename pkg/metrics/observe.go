package metrics

import (
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Observe records one controller pass. Only passes that followed the bucket
// count: a restore from the local snapshot or a stand-down is not a
// reconcile of the bucket's state.
func (m *Agent) Observe(o mesh.Outcome) {
	if o.Snapshots > 0 {
		m.WatchSnapshots.Add(float64(o.Snapshots))
	}
	if o.Events > 0 {
		m.WatchEvents.Add(float64(o.Events))
	}
	contested := 0.0
	if o.Claim == mesh.ClaimContested || o.Claim == mesh.ClaimLost {
		contested = 1
	}
	m.ClaimContested.Set(contested)
	m.FirstContacts.WithLabelValues("handshake").Add(float64(o.Ended.Handshake))
	m.FirstContacts.WithLabelValues("bound").Add(float64(o.Ended.Bound))
	m.FirstContactRestarts.Add(float64(o.Restarts))
	if !o.Synced() {
		return
	}
	for _, r := range o.NewRejections {
		m.Rejections.WithLabelValues(string(r.Reason)).Inc()
	}
	now := make(map[peer.Reason]int, len(peer.Reasons))
	for _, r := range o.Rejected {
		now[r.Reason]++
	}
	for _, r := range peer.Reasons {
		m.RecordsRejected.WithLabelValues(string(r)).Set(float64(now[r]))
	}
	m.PeersDesired.Set(float64(o.Peers))
	m.ReconcileDuration.Observe(o.Took.Seconds())
	if o.DeviceErr != nil {
		m.Reconciles.WithLabelValues("error").Inc()
		return
	}
	m.Reconciles.WithLabelValues("ok").Inc()
	m.PeersConfigured.Set(float64(o.Configured))
	m.PeerChanges.WithLabelValues("add").Add(float64(len(o.Plan.Add)))
	m.PeerChanges.WithLabelValues("update").Add(float64(len(o.Plan.Update)))
	m.PeerChanges.WithLabelValues("remove").Add(float64(len(o.Plan.Remove)))
}
