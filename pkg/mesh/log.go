package mesh

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

// logPlan logs each changed peer when there are few (the common case: a
// join or a leave), and a summary when there are many (initial sync).
func (c *Controller) logPlan(res reconcile.Result, d peer.Delta) {
	p := res.Plan
	n := len(p.Add) + len(p.Update) + len(p.Remove)
	if n == 0 {
		return
	}
	if n > 8 {
		c.log.Info("peers configured", "added", len(p.Add), "updated", len(p.Update), "removed", len(p.Remove),
			"peers", d.Peers, "took", res.Duration.Round(time.Microsecond))
		return
	}
	for _, s := range p.Add {
		r := c.accepted(d, s.PublicKey)
		c.log.Info("peer added", "peer", r.Name, "prefix", r.Prefix, "endpoint", s.Endpoint, "key", r.Key)
	}
	for _, s := range p.Update {
		r := c.accepted(d, s.PublicKey)
		c.log.Info("peer updated", "peer", r.Name, "prefix", r.Prefix, "endpoint", s.Endpoint, "key", r.Key)
	}
	for _, k := range p.Remove {
		if r := removed(d, k); r != nil {
			c.log.Info("peer removed", "peer", r.Name, "prefix", r.Prefix, "key", r.Key)
		} else {
			c.log.Info("peer removed", "public_key", k.String(), "why", "not in the bucket")
		}
	}
}

// accepted is the record behind peer k as this pass resolved it: the pass's
// changes, or (a peer re-added by a refresh that repaired drift) the table,
// which has not changed since.
func (c *Controller) accepted(d peer.Delta, k wgtypes.Key) peer.Accepted {
	for _, ch := range d.Changes {
		if ch.PublicKey == k && ch.New != nil {
			return *ch.New
		}
	}
	r, _ := c.table.Peer(k)
	return r
}

// removed is the record whose peer k this pass took away, if the bucket
// still had it at the previous pass.
func removed(d peer.Delta, k wgtypes.Key) *peer.Accepted {
	for _, ch := range d.Changes {
		if ch.PublicKey == k {
			return ch.Old
		}
	}
	return nil
}

// noteRejections logs each rejected record once per revision and returns
// the ones not reported before.
func (c *Controller) noteRejections(rejected []peer.Rejection) []peer.Rejection {
	var fresh []peer.Rejection
	seen := make(map[string]bool, len(rejected))
	for _, r := range rejected {
		seen[r.Key] = true
		if rev, ok := c.logged[r.Key]; ok && rev == r.Revision {
			continue
		}
		c.logged[r.Key] = r.Revision
		fresh = append(fresh, r)
		c.log.Warn("record rejected", "key", r.Key, "revision", r.Revision, "reason", string(r.Reason), "detail", r.Detail)
	}
	for k := range c.logged {
		if !seen[k] {
			delete(c.logged, k)
		}
	}
	return fresh
}
