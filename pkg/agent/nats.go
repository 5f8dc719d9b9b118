package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// attemptTimeout bounds one try of a control-plane step (open, claim).
const attemptTimeout = 5 * time.Second

// connect dials NATS with a connection that never gives up: while no server
// answers it still returns, and nats.go keeps trying in the background.
func (a *Agent) connect() error {
	conn, err := bucket.Dial(a.set.NATS, bucket.Client{
		Name:       "ikto-agent " + a.self.Name,
		Persistent: true,
		Log:        a.log,
		OnConnect: func(reconnect bool) {
			a.metrics.NATSConnected.Set(1)
			// The first connection comes before any watch; only a
			// reconnect leaves one behind that must re-read the bucket.
			if reconnect {
				a.metrics.NATSReconnects.Inc()
				a.kickWatch()
			}
		},
		OnDisconnect: func() { a.metrics.NATSConnected.Set(0) },
	})
	if err != nil {
		return err
	}
	a.conn = conn
	if err := conn.ClosedForGood(); err != nil {
		conn.Close()
		return err
	}
	if conn.Connected() {
		a.metrics.NATSConnected.Set(1)
	} else {
		a.log.Warn("no NATS server answers yet; retrying in the background", "nats_url", a.set.NATS.Redacted())
	}
	return nil
}

// kickWatch makes the watcher re-read the bucket: an ordered-consumer watch
// would notice a restarted server only after missed heartbeats.
func (a *Agent) kickWatch() {
	select {
	case a.reconnected <- struct{}{}:
	default:
	}
}

// openBucket binds the bucket, creating it when missing (if the credentials
// allow), retrying while NATS is unreachable.
func (a *Agent) openBucket(ctx context.Context) error {
	return a.retry(ctx, "open bucket "+a.set.NATS.Bucket, func(ctx context.Context) error {
		if err := a.conn.ClosedForGood(); err != nil {
			return retry.Permanent(err)
		}
		m, err := a.conn.Open(ctx, true)
		switch {
		case errors.Is(err, bucket.ErrBucketMissing) && errors.Is(err, bucket.ErrPermission):
			// Enrolled hosts may not create buckets: an operator will.
			return fmt.Errorf("bucket %s does not exist and this host may not create it; an operator creates it with ikto-admin init-bucket: %w", a.set.NATS.Bucket, err)
		case errors.Is(err, bucket.ErrPermission):
			return retry.Permanent(fmt.Errorf("%w; check the permissions of nats_creds", err))
		case errors.Is(err, bucket.ErrReplicasNotSupported):
			return retry.Permanent(err)
		case err != nil:
			return err
		}
		a.mesh = m
		return nil
	})
}

// claim takes this host's prefix, retrying while NATS is unreachable, with
// its record signed by its WireGuard key. Another key holding the prefix,
// or this host's key being revoked, is final.
func (a *Agent) claim(ctx context.Context) (uint64, error) {
	var rev uint64
	rules := a.set.Rules()
	sign := func(r *peer.Record) error { return rules.SignRecord(r, a.key) }
	err := a.retry(ctx, "claim "+a.set.Prefix.String(), func(ctx context.Context) error {
		if err := a.conn.ClosedForGood(); err != nil {
			return retry.Permanent(err)
		}
		rec, r, err := a.mesh.Claim(ctx, a.self, sign)
		err = a.conn.Explain(err)
		switch {
		case errors.Is(err, bucket.ErrRevoked):
			return retry.Permanent(fmt.Errorf("%w: public key %s is revoked", ErrEvicted, a.self.PublicKey))
		case errors.Is(err, bucket.ErrPermission):
			return retry.Permanent(fmt.Errorf("%w; check the permissions of the NATS user", err))
		case errors.Is(err, bucket.ErrAddressInUse):
			return retry.Permanent(err)
		}
		if err != nil {
			return err
		}
		a.self, rev = rec, r
		return nil
	})
	return rev, err
}

// retry runs one control-plane step with ikto's backoff policy until it
// succeeds, fails for good or ctx ends, logging each failure.
func (a *Agent) retry(ctx context.Context, what string, f func(context.Context) error) error {
	return retry.Do(ctx, retry.Standard, attemptTimeout, func(n int, err error, next time.Duration) {
		a.log.Warn(what+" failed; retrying", "attempt", n, "retry_in", next.Round(time.Millisecond), "err", err)
	}, f)
}

// followStream hears of the bucket being deleted (the keeper makes it again
// and writes the record back) or made again (the watch re-reads it).
func (a *Agent) followStream(ctx context.Context) error {
	err := a.conn.FollowStream(ctx, bucket.StreamEvents{
		Deleted: func() {
			a.log.Warn("the bucket was deleted; the device keeps its peers while it is made again", "bucket", a.set.NATS.Bucket)
			a.keeper.Request(peer.Repair{Bucket: true})
		},
		Created: a.kickWatch,
		Changed: func() {
			select {
			case a.audit <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		a.log.Warn("cannot follow the bucket's stream advisories; a deleted bucket is noticed at the next probe", "err", err)
	}
	return nil
}

// noteBucketSettings keeps what is wrong with the bucket's settings for
// /v1/status and logs it when it changes: a bucket that allows rollups lets
// any one host empty it (docs/contract.md §4).
func (a *Agent) noteBucketSettings(problems []error) {
	var now []string
	for _, p := range problems {
		now = append(now, p.Error())
	}
	if old := a.problems.Swap(&now); old != nil && slices.Equal(*old, now) {
		return
	}
	for _, p := range now {
		a.log.Warn("the bucket's settings are unsafe", "bucket", a.set.NATS.Bucket, "err", p)
	}
	if len(now) == 0 {
		a.log.Debug("the bucket's settings are safe", "bucket", a.set.NATS.Bucket)
	}
}
