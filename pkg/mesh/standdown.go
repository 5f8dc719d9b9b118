package mesh

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

// resume puts every accepted peer back after a stand-down.
func (c *Controller) resume(o Outcome) Outcome {
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
// pass after the bucket's snapshot compares the whole device again. This end
// starts the handshake with every peer the device has no session with
// (restoreContact).
func (c *Controller) Restore(peers map[wgtypes.Key]peer.Accepted) Outcome {
	o := c.begin()
	o.State, o.Peers, o.View = StateRestored, len(peers), &peer.View{Peers: peers}
	now := time.Now()
	sessions := c.sessions()
	c.restored = peers
	for _, p := range peers {
		c.restoreContact(p.PublicKey, now, sessions)
	}
	specs := make(map[wgtypes.Key]reconcile.Spec, len(peers))
	for k, p := range peers {
		specs[k] = c.spec(p)
	}
	res, err := c.rec.AddMissing(specs)
	o.Plan, o.Refresh, o.Took, o.DeviceErr = res.Plan, true, res.Duration, err
	for _, p := range peers {
		c.table.RecallAccepted(p)
	}
	if err == nil {
		o.Configured = len(peers)
	}
	o.Contacts = c.pendingContacts()
	return o
}

// StandDown takes every peer off the device: this host is out of the mesh
// (claim is ClaimEvicted or ClaimLost, for the reason why).
func (c *Controller) StandDown(claim Claim, why string) Outcome {
	return c.standDown(c.begin(), claim, why)
}

func (c *Controller) standDown(o Outcome, claim Claim, why string) Outcome {
	o.State, o.Claim, o.Why, o.View, o.Peers, o.Repair = StateStandingDown, claim, why, &peer.View{}, 0, peer.Repair{}
	// No peer, no first contact: one left running would put its peer
	// back (its end, or its turn, writes the peer's configuration).
	c.endContacts()
	res, err := c.rec.Apply(nil, true)
	o.Plan, o.Refresh, o.Took, o.DeviceErr = res.Plan, true, res.Duration, err
	if err != nil {
		c.log.Error("remove peers failed", "device", c.dev.Name(), "err", err)
	} else {
		c.log.Info("removed every peer", "device", c.dev.Name(), "removed", len(res.Plan.Remove))
	}
	if claim == ClaimEvicted {
		c.log.Error("this host was evicted: "+why+"; every peer was removed. To rejoin, move the revoked key file away and run ikto-init again (a new key and prefix)",
			"prefix", c.self.Prefix)
	}
	return o
}
