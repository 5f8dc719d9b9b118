package agent

import (
	"time"

	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

func (a *Agent) routes() api.Routes {
	return api.Routes{
		"GET /v1/status": api.JSON(a.Status),
		"GET /metrics":   a.metrics.Handler(),
	}
}

// Status is the agent's view for GET /v1/status: the last outcome of the
// controller joined with what the device reports now. It reads only the
// outcome, which no later pass changes, so the accepted set, synced and the
// time of the last reconcile shown together always belong together.
func (a *Agent) Status() api.Status {
	o := a.last.Load()
	self := a.self
	if r := a.record.Load(); r != nil {
		self = *r
	}
	st := api.Status{
		Self:     self,
		Address:  a.set.Device.Address.Addr().String(),
		Instance: a.instance,
		Device:   a.set.Device.Name,
		NATS:     api.NATSStatus{Connected: a.conn.Connected(), Bucket: a.set.NATS.Bucket, URL: a.set.NATS.Redacted()},
		State:    string(o.State),
		Claim:    string(o.Claim),
		Synced:   o.Synced(),
		Peers:    []api.PeerStatus{},
		Rejected: []api.Rejected{},
	}
	if d := a.twin.Load(); d != nil {
		st.Duplicate = &api.Duplicate{Instance: d.Instance, Addr: d.Addr, Name: d.Name, Version: d.Version, Since: d.Since, Fix: a.twinFix()}
	}
	if p := a.problems.Load(); p != nil {
		st.NATS.Problems = *p
	}
	if st.NATS.Connected {
		st.NATS.Server = a.conn.Server()
	} else if err := a.conn.LastError(); err != nil {
		st.NATS.LastError = err.Error()
	}
	if o.Synced() {
		t := o.At
		st.LastReconcile = &t
	}
	var view peer.View
	if o.View != nil {
		view = *o.View
	}
	for _, r := range view.Rejected {
		st.Rejected = append(st.Rejected, api.Rejected{Key: r.Key, Revision: r.Revision, Reason: string(r.Reason), Detail: r.Detail})
	}
	h := a.dev.Load()
	if h == nil {
		return st // no device yet: the claim comes first
	}
	dev := h.Device
	st.Backend = dev.Backend()
	peers, err := dev.Peers()
	if err != nil {
		a.log.Warn("status: read device peers", "device", dev.Name(), "err", err)
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
		// A first contact is looked at only when due: a handshake it has
		// not seen yet is established all the same.
		ps.Handshake = mesh.HandshakeStateStale
		switch since, pending := o.Contacts[p.PublicKey]; {
		case mesh.SessionLive(p.LastHandshakeTime, time.Now()):
			ps.Handshake = mesh.HandshakeStateEstablished
		case pending:
			ps.Handshake, ps.PendingSince = mesh.HandshakeStatePending, &since
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}
