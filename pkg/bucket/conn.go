package bucket

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// Client says who is connecting and how hard the connection tries.
type Client struct {
	// Name is shown to the server (connz) as the client's name.
	Name string
	// Persistent is the agent's connection: it never gives up. Dial returns
	// even when no server answers yet and nats.go keeps trying in the
	// background, reconnects forever with Reconnect's delays, and a dead
	// server is noticed in about ten seconds. Otherwise (ikto-admin,
	// ikto-init) Dial makes one attempt bounded by Timeout and the
	// connection does not reconnect: an operator wants an answer.
	Persistent bool
	// Reconnect spaces reconnect attempts (Persistent only; zero means
	// ReconnectPolicy).
	Reconnect retry.Policy
	// Timeout bounds connecting (zero means nats.go's default).
	Timeout time.Duration
	// Log receives connection events; nil discards them.
	Log *slog.Logger
	// OnConnect is called on every (re)connection, OnDisconnect when the
	// connection drops or closes. Either may be nil.
	OnConnect    func(reconnect bool)
	OnDisconnect func()
}

// ReconnectPolicy is how a persistent connection spaces its reconnect
// attempts: quickly at first, never more than a few seconds apart.
// A server that comes back is found within a second: one TCP connect a
// second per host is cheap, and the mesh's changes wait for it.
var ReconnectPolicy = retry.Policy{Min: 100 * time.Millisecond, Max: time.Second}

// Conn is an open connection to the mesh's NATS servers.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Servers names the servers for messages, passwords masked.
	Servers string
	nats    config.NATS

	// dialErr is the last failed attempt to reach a server (a persistent
	// connection's), which nats.go keeps nowhere else.
	dialErr atomic.Pointer[dialFailure]
	log     *slog.Logger
	// closing is set by Close: the close that follows is ours.
	closing atomic.Bool
}

type dialFailure struct{ err error }

// noteDialErr keeps a failed attempt's error and logs it when it is not
// the same as the last one: a refused port, an unknown host name and a
// TLS or authentication failure each say so once, not every retry.
func (c *Conn) noteDialErr(err error) {
	if errors.Is(err, nats.ErrNoServers) {
		return // says no more than that the attempt failed
	}
	old := c.dialErr.Swap(&dialFailure{err})
	if old != nil && old.err.Error() == err.Error() {
		return
	}
	c.log.Warn("cannot reach NATS; retrying", "nats_url", c.Servers, "err", explainDial(err))
}

// Options are the nats.go options for s and c: the only place ikto builds
// them, for all three binaries.
func Options(s config.NATS, c Client) []nats.Option {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		// Asynchronous errors (a denied subject, a slow consumer) would
		// otherwise go to nats.go's default handler on stderr, unlogged.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "subject", subject, "err", err)
		}),
	}
	if c.Timeout > 0 {
		opts = append(opts, nats.Timeout(c.Timeout))
	}
	if s.Creds != "" {
		opts = append(opts, nats.UserCredentials(s.Creds))
	}
	if s.InboxPrefix != "" {
		// Replies (requests, the watch's deliveries) come under this prefix:
		// an enrolled host may subscribe to nothing else.
		opts = append(opts, nats.CustomInboxPrefix(s.InboxPrefix))
	}
	if s.TLSCA != "" {
		opts = append(opts, nats.RootCAs(s.TLSCA))
	}
	if s.TLSCert != "" {
		opts = append(opts, nats.ClientCert(s.TLSCert, s.TLSKey))
	}
	if s.User != "" {
		opts = append(opts, nats.UserInfo(s.User, s.Password))
	}
	if s.Token != "" {
		opts = append(opts, nats.Token(s.Token))
	}
	if !c.Persistent {
		return append(opts, nats.NoReconnect())
	}
	return append(opts, persistentOptions(c, log)...)
}

// persistentOptions keep the agent's connection for its whole life: nats.go's
// default of 60 reconnects ends in a closed connection and closed watch
// channels, which is how ikto 0.3.0 lost its mesh after a long outage.
func persistentOptions(c Client, log *slog.Logger) []nats.Option {
	policy := c.Reconnect
	if policy.Max == 0 {
		policy = ReconnectPolicy
	}
	delays := policy.New() // used only from nats.go's reconnect goroutine
	notify := func(f func()) {
		if f != nil {
			f()
		}
	}
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if attempts <= 1 {
				delays.Reset() // a new outage starts from the shortest delay
			}
			return delays.NextBackOff()
		}),
		// Notice a dead server in ~10 s rather than the default 4 minutes.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
			if c.OnConnect != nil {
				c.OnConnect(false)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			if c.OnConnect != nil {
				c.OnConnect(true)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			notify(c.OnDisconnect)
			if err == nil {
				return // our own Close at shutdown
			}
			log.Warn("lost NATS connection; the device keeps its peers", "err", err)
		}),
	}
}

// Dial connects to the servers of s. A persistent client gets a connection
// even when no server answers yet (it keeps trying); only a bad option, URL
// or file is an error then. Any other client gets an error naming the
// servers when none answers.
func Dial(s config.NATS, c Client) (*Conn, error) {
	servers := s.Redacted()
	conn := &Conn{Servers: servers, nats: s, log: c.Log}
	if conn.log == nil {
		conn.log = slog.New(slog.DiscardHandler)
	}
	opts := Options(s, c)
	if c.Persistent {
		opts = append(opts,
			nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { conn.noteDialErr(err) }),
			nats.ClosedHandler(func(nc *nats.Conn) {
				if c.OnDisconnect != nil {
					c.OnDisconnect()
				}
				// Our own Close ends the agent, whatever error the
				// connection met before it (a slow consumer long past, no
				// server answering the last try): only a close nats.go
				// chose is for good.
				if conn.closing.Load() {
					return
				}
				conn.log.Error("NATS connection closed for good", "err", nc.LastError())
			}))
	}
	nc, err := nats.Connect(strings.Join(s.URLs, ","), opts...)
	if err != nil {
		err = explainConnect(err, s.URLs, c.Timeout)
		if c.Persistent {
			return nil, fmt.Errorf("nats_url %s: %w", servers, err)
		}
		return nil, fmt.Errorf("NATS server %s: %w", servers, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS server %s: jetstream: %w", servers, err)
	}
	conn.NC, conn.JS = nc, js
	return conn, nil
}

// Close closes the connection.
func (c *Conn) Close() {
	c.closing.Store(true)
	c.NC.Close()
}

// Connected reports whether a server answers right now.
func (c *Conn) Connected() bool { return c.NC.IsConnected() }

// Server is the URL of the server connected to, password masked; "" when
// none is.
func (c *Conn) Server() string { return c.NC.ConnectedUrlRedacted() }

// ClientIP is this host's address as the connected server sees it (the
// client_ip of its INFO): what tells two machines with one config apart.
// "" while none is connected.
func (c *Conn) ClientIP() string {
	if !c.Connected() {
		return ""
	}
	ip, err := c.NC.GetClientIP()
	if err != nil || ip == nil {
		return ""
	}
	return ip.String()
}

// LastError is the connection's last error (a permissions violation, a
// closed connection) or, while no server is reached, the last failed
// attempt's (a refused port, an unknown host name, TLS, authentication),
// explained where ikto knows the fix; nil when there is none.
func (c *Conn) LastError() error {
	if err := c.NC.LastError(); err != nil {
		return c.Explain(err)
	}
	if f := c.dialErr.Load(); f != nil && !c.Connected() {
		return explainDial(f.err)
	}
	return nil
}

// ClosedForGood is nil while the connection is up or still trying. Once
// nats.go has closed it — it does that on a repeated authentication failure,
// never for an unreachable server — it is the final error, naming what to
// fix: retrying would only repeat "connection closed" forever.
func (c *Conn) ClosedForGood() error {
	if !c.NC.IsClosed() {
		return nil
	}
	err := c.NC.LastError()
	if err == nil {
		err = nats.ErrConnectionClosed
	}
	fix := "check the user and password in nats_url, or nats_creds"
	if errors.Is(err, nats.ErrPermissionViolation) {
		err = fmt.Errorf("%w: %w", ErrPermission, err)
		fix = "check the permissions of the NATS user (docs/nats-permissions.md, installed in /usr/share/doc/ikto)"
	}
	return fmt.Errorf("NATS at %s closed the connection: %w; %s", c.Servers, err, fix)
}

// Explain makes a failed request's error say what it was: a JetStream
// request the server denied is never answered, so it looks like a timeout,
// and only the connection's last error tells. The result matches
// ErrPermission when the server refused.
func (c *Conn) Explain(err error) error {
	switch {
	case err == nil || errors.Is(err, ErrPermission):
		return err
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStreamStoreFailed {
		return fmt.Errorf("%w: %w", ErrStoreFailed, err)
	}
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w (%w)", ErrNoJetStream, err)
	}
	if last := c.NC.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w (%w: %w)", err, ErrPermission, last)
	}
	return err
}
