package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
		b       beats
	)
	liveBucket := bucket.LiveBucket(a.set.NATS.Bucket)
	for {
		if a.conn.Connected() {
			err := a.beat(ctx, &b)
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

// beats is what the heartbeat goroutine carries from one write to the next.
type beats struct {
	reach mesh.Reach
	twins mesh.Twins
	// after is the revision of this agent's last heartbeat: the next is
	// written with compare-and-set on it.
	after uint64
}

func (a *Agent) beat(ctx context.Context, b *beats) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	now := time.Now().UTC()
	self := a.record.Load()
	if self == nil {
		return nil // not claimed yet
	}
	hb := bucket.Heartbeat{PublicKey: self.PublicKey, Name: self.Name, At: now, Version: a.opt.Version,
		Writer: bucket.Writer{Instance: a.instance, Addr: a.conn.ClientIP()}}
	if t := a.twin.Load(); t != nil {
		hb.Duplicate = &t.Duplicate
	}
	if o := a.last.Load(); o.Synced() {
		hb.Revision = o.Revision
	}
	if h := a.dev.Load(); h != nil {
		if peers, err := h.Peers(); err == nil {
			hb.Unreachable = b.reach.Unreachable(peers, now)
		}
	}
	rev, other, err := a.mesh.WriteHeartbeat(ctx, a.set.Prefix, hb, b.after)
	if err != nil {
		return err
	}
	b.after = rev
	a.metrics.HeartbeatWritten(now)
	a.noteTwin(now, &b.twins, mesh.HeartbeatWriter{Key: self.PublicKey, Instance: a.instance}, other)
	return nil
}

// noteTwin hands what the heartbeat write found to the twins rule and
// reports another live agent with this host's key: logged once per agent
// seen, counted, shown in /v1/status and carried in the next heartbeats
// (for ikto-admin list and health) while it lasts.
func (a *Agent) noteTwin(now time.Time, t *mesh.Twins, self mesh.HeartbeatWriter, other *bucket.Heartbeat) {
	var found *mesh.HeartbeatWriter
	if other != nil {
		found = &mesh.HeartbeatWriter{Key: other.PublicKey, Instance: other.Instance}
	}
	change := t.Beat(now, self, found)
	w, since, live := t.Twin()
	switch {
	case change == mesh.TwinEnded:
		a.twin.Store(nil)
		a.metrics.DuplicateIdentity.Set(0)
		a.log.Info("the other agent with this host's key has written no heartbeat for a while; this host's key is its own again",
			"prefix", a.set.Prefix, "other_instance", w.Instance)
		return
	case !live || found == nil || found.Instance != w.Instance:
		return
	}
	seen := &twinSeen{Duplicate: bucket.Duplicate{Writer: other.Writer, Since: since}.Trimmed(), Name: other.Name, Version: other.Version}
	a.twin.Store(seen)
	if change == mesh.TwinNone {
		return // the same twin: said already
	}
	a.metrics.DuplicateIdentity.Set(1)
	a.metrics.DuplicateIdentities.Inc()
	a.log.Error("another ikto-agent is running with this host's key and prefix (a cloned machine, or this config on two hosts): "+
		"the other hosts send this prefix's traffic to whichever of the two spoke last. "+a.twinFix(),
		"prefix", a.set.Prefix, "public_key", self.Key,
		"other_instance", other.Instance, "other_addr", other.Addr, "other_name", other.Name, "other_version", other.Version,
		"instance", a.instance, "addr", a.conn.ClientIP())
}

// twinSeen is the other live agent with this host's key: what the
// heartbeats carry, and its name and version as its heartbeat gave them.
type twinSeen struct {
	bucket.Duplicate
	Name, Version string
}

// twinFix is what an operator does about a twin: the copy gets its own key.
func (a *Agent) twinFix() string {
	k := a.set.PrivateKeyPath
	return "A copy must get a key and prefix of its own: on the copy, stop ikto-agent, move the key away (mv " + k + " " + k + ".copy) and run ikto-init again, which makes a new key and draws a new prefix"
}

// newInstance is a random id for this agent process, in every heartbeat it
// writes.
func newInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return hex.EncodeToString(b[:])
}
