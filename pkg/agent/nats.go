package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/store"
)

// connect returns a connection that never gives up: nats.go's default of 60
// reconnects ends in a closed connection and closed watch channels, which is
// how ikto 0.3.0 lost its mesh after a long outage. While no server answers,
// Connect still returns and nats.go keeps trying in the background.
func (a *Agent) connect(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("ikto-agent " + a.self.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return jitter(min(100*time.Millisecond<<min(attempts, 6), 5*time.Second))
		}),
		// Notice a dead server in ~10 s rather than the default 4 minutes.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(c *nats.Conn) {
			a.log.Info("connected to NATS", "server", c.ConnectedUrlRedacted())
			a.metrics.NATSConnected.Set(1)
			a.kickWatch()
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			a.log.Info("reconnected to NATS", "server", c.ConnectedUrlRedacted())
			a.metrics.NATSConnected.Set(1)
			a.metrics.NATSReconnects.Inc()
			a.kickWatch()
		}),
		// Asynchronous errors (a denied subject, a slow consumer) would
		// otherwise go to nats.go's default handler on stderr, unlogged.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			a.log.Warn("NATS error", "subject", subject, "err", err)
		}),
		nats.ClosedHandler(func(c *nats.Conn) {
			a.metrics.NATSConnected.Set(0)
			if err := c.LastError(); err != nil {
				a.log.Error("NATS connection closed for good", "err", err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			a.metrics.NATSConnected.Set(0)
			if err == nil {
				return // our own Close at shutdown
			}
			a.log.Warn("lost NATS connection; the device keeps its peers", "err", err)
		}),
	}
	if a.set.NATS.Creds != "" {
		opts = append(opts, nats.UserCredentials(a.set.NATS.Creds))
	}
	if a.set.NATS.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.set.NATS.TLSCA))
	}
	if a.set.NATS.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.set.NATS.TLSCert, a.set.NATS.TLSKey))
	}
	nc, err := nats.Connect(strings.Join(a.set.NATS.URLs, ","), opts...)
	if err != nil {
		// With RetryOnFailedConnect only a bad option or URL gets here.
		return fmt.Errorf("nats_url %s: %w", a.set.NATS.Redacted(), err)
	}
	a.nc = nc
	if err := a.closedForGood(); err != nil {
		return err
	}
	if nc.IsConnected() {
		a.metrics.NATSConnected.Set(1)
	} else {
		a.log.Warn("no NATS server answers yet; retrying in the background", "nats_url", a.set.NATS.Redacted())
	}
	return nil
}

// closedForGood is nil while nats.go is connected or still trying; once it
// has closed the connection (it does that on a repeated authentication
// failure, never for an unreachable server) it is the final error, naming
// what to fix. Retrying would only repeat "connection closed" forever.
func (a *Agent) closedForGood() error {
	if !a.nc.IsClosed() {
		return nil
	}
	err := a.nc.LastError()
	if err == nil {
		err = nats.ErrConnectionClosed
	}
	fix := "check the user and password in nats_url, or nats_creds"
	if isPermission(err) {
		fix = "check the permissions of the NATS user (see the README's least-privilege section)"
	}
	return fmt.Errorf("NATS at %s closed the connection: %w; %s", a.set.NATS.Redacted(), err, fix)
}

func (a *Agent) kickWatch() {
	select {
	case a.reconnected <- struct{}{}:
	default:
	}
}

// openBucket binds the bucket, creating it when missing (if the credentials
// allow), retrying while NATS is unreachable.
func (a *Agent) openBucket(ctx context.Context) error {
	js, err := jetstream.New(a.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return retry(ctx, a.log, "open bucket "+a.set.NATS.Bucket, func(ctx context.Context) error {
		if err := a.closedForGood(); err != nil {
			return permanentError{err}
		}
		kv, err := store.OpenBucket(ctx, js, a.set.NATS.Bucket, true, a.set.NATS.Replicas)
		if err != nil && !isPermission(err) && isPermission(a.nc.LastError()) {
			// A denied JetStream request is never answered: it looks like a
			// timeout, and only the connection's last error tells.
			err = fmt.Errorf("%w (%w)", err, a.nc.LastError())
		}
		switch {
		case isPermission(err):
			return permanentError{fmt.Errorf("%w; check the permissions of nats_creds", err)}
		case errors.Is(err, store.ErrReplicasNotSupported):
			return permanentError{err}
		case err != nil:
			return err
		}
		a.kv = kv
		return nil
	})
}

// claim takes this host's prefix, retrying while NATS is unreachable. Another
// key holding the prefix is final.
func (a *Agent) claim(ctx context.Context) (uint64, error) {
	var rev uint64
	err := retry(ctx, a.log, "claim "+a.prefix.String(), func(ctx context.Context) error {
		if err := a.closedForGood(); err != nil {
			return permanentError{err}
		}
		// A revoked key must not put its record back: that would leave a
		// claim every agent rejects.
		if _, err := a.kv.Get(ctx, peer.RevokedKey(a.key.PublicKey())); err == nil {
			return permanentError{fmt.Errorf("%w: public key %s is revoked", ErrEvicted, a.self.PublicKey)}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			return err
		}
		r, err := store.Claim(ctx, a.kv, a.self)
		if err != nil && !isPermission(err) && isPermission(a.nc.LastError()) {
			err = fmt.Errorf("%w (%w); check the permissions of the NATS user", err, a.nc.LastError())
		}
		if errors.Is(err, store.ErrAddressInUse) || isPermission(err) {
			return permanentError{err}
		}
		rev = r
		return err
	})
	return rev, err
}

func isPermission(err error) bool {
	return err != nil && (errors.Is(err, nats.ErrPermissionViolation) ||
		strings.Contains(strings.ToLower(err.Error()), "permissions violation"))
}

// jitter spreads d over [d/2, d) so a fleet that lost its server does not
// come back in lock step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}
