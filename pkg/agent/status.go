package agent

import (
	"time"

	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

func (a *Agent) routes() api.Routes {
	return api.Routes{
		"GET /v1/status": api.JSON(a.Status),
		"GET /metrics":   a.metrics.Handler(),
	}
}

// Status is the agent's view for GET /v1/status: the published snapshot of the
// bucket joined with what the device reports now.
func (a *Agent) Status() api.Status {
	snap := a.published.Load()
	st := api.Status{
		Self:     a.self,
		Backend:  a.dev.Backend(),
		Device:   a.dev.Name(),
		NATS:     api.NATSStatus{Connected: a.nc.IsConnected(), Bucket: a.set.NATS.Bucket},
		Synced:   snap.synced,
		Peers:    []api.PeerStatus{},
		Rejected: []api.Rejected{},
	}
	if st.NATS.Connected {
		st.NATS.Server = a.nc.ConnectedUrlRedacted()
	}
	if snap.synced {
		t := snap.lastReconcile
		st.LastReconcile = &t
	}
	view := snap.view()
	for _, r := range view.Rejected {
		st.Rejected = append(st.Rejected, api.Rejected{Key: r.Key, Revision: r.Revision, Reason: string(r.Reason), Detail: r.Detail})
	}
	peers, err := a.dev.Peers()
	if err != nil {
		a.log.Warn("status: read device peers", "device", a.dev.Name(), "err", err)
	}
	specs := reconcile.FromDevice(peers)
	for _, p := range peers {
		ps := api.PeerStatus{RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, AllowedIPs: []string{}}
		if rec, ok := view.Peers[p.PublicKey]; ok {
			ps.Record = rec.Record
		} else {
			ps.PublicKey = p.PublicKey.String()
		}
		s := specs[p.PublicKey]
		if s.Endpoint.IsValid() {
			ps.Endpoint = s.Endpoint.String()
		}
		for _, pfx := range s.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, pfx.String())
		}
		if !p.LastHandshakeTime.IsZero() {
			t := p.LastHandshakeTime.UTC().Truncate(time.Second)
			ps.LatestHandshake = &t
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}
