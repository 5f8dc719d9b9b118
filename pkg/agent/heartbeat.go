package agent

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/store"
)

// HeartbeatEvery is how often an agent writes its heartbeat. ikto-admin list
// calls a host online while its last heartbeat is younger than three periods.
const HeartbeatEvery = 10 * time.Second

// heartbeat keeps this host's liveness entry fresh in the separate live
// bucket, so the peers bucket (which every agent watches) carries no periodic
// traffic and the claim's revision never moves. Failures are logged when the
// state changes, not on every tick, and never stop the agent.
func (a *Agent) heartbeat(ctx context.Context) error {
	js, err := jetstream.New(a.nc)
	if err != nil {
		return err
	}
	tick := time.NewTicker(HeartbeatEvery)
	defer tick.Stop()
	var (
		live    jetstream.KeyValue
		failing bool
	)
	for {
		if a.connected() {
			err := a.beat(ctx, js, &live)
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				a.log.Warn("heartbeat write failed; the mesh is unaffected, ikto-admin list will show this host as offline",
					"bucket", store.LiveBucket(a.set.NATS.Bucket), "err", err)
				failing = true
			case err == nil && failing:
				a.log.Info("heartbeat written again", "bucket", store.LiveBucket(a.set.NATS.Bucket))
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

func (a *Agent) beat(ctx context.Context, js jetstream.JetStream, live *jetstream.KeyValue) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if *live == nil {
		kv, err := store.OpenLiveBucket(ctx, js, a.set.NATS.Bucket, true, a.set.NATS.Replicas)
		if err != nil {
			return err
		}
		*live = kv
	}
	now := time.Now().UTC()
	hb := store.Heartbeat{PublicKey: a.self.PublicKey, Name: a.self.Name, At: now, Version: a.opt.Version}
	if err := store.PutHeartbeat(ctx, *live, a.prefix, hb); err != nil {
		return err
	}
	a.metrics.HeartbeatWritten(now)
	return nil
}
