package agent

import (
	"context"
	"time"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/mesh"
)

// heartbeat keeps this host's liveness entry fresh in the separate live
// bucket, so the peers bucket (which every agent watches) carries no periodic
// traffic and the claim's revision never moves. Failures are logged when the
// state changes, not on every tick, and never stop the agent.
func (a *Agent) heartbeat(ctx context.Context) error {
	tick := time.NewTicker(mesh.HeartbeatEvery)
	defer tick.Stop()
	var (
		failing bool
		reach   mesh.Reach
	)
	liveBucket := bucket.LiveBucket(a.set.NATS.Bucket)
	for {
		if a.conn.Connected() {
			err := a.beat(ctx, &reach)
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				a.log.Warn("heartbeat write failed; the mesh is unaffected, ikto-admin list will show this host as offline",
					"bucket", liveBucket, "err", err)
				failing = true
			case err == nil && failing:
				a.log.Info("heartbeat written again", "bucket", liveBucket)
				failing = false
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (a *Agent) beat(ctx context.Context, reach *mesh.Reach) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	now := time.Now().UTC()
	self := a.record.Load()
	if self == nil {
		return nil // not claimed yet
	}
	hb := bucket.Heartbeat{PublicKey: self.PublicKey, Name: self.Name, At: now, Version: a.opt.Version}
	if o := a.last.Load(); o.Synced() {
		hb.Revision = o.Revision
	}
	if h := a.dev.Load(); h != nil {
		if peers, err := h.Peers(); err == nil {
			hb.Unreachable = reach.Unreachable(peers, now)
		}
	}
	if err := a.mesh.PutHeartbeat(ctx, a.set.Prefix, hb); err != nil {
		return err
	}
	a.metrics.HeartbeatWritten(now)
	return nil
}
