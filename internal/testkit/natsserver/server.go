// Package natsserver runs the embedded JetStream nats-server that ikto's
// tests, integration harness, demo and benchmarks use: one way to build its
// options, start it, wait until it accepts clients and start it again on
// the same port with the same store. It returns errors instead of taking a
// testing.TB, because the demo and the benchmarks are programs; package
// natstest adapts it to tests.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long a server may take to accept clients.
const readyTimeout = 10 * time.Second

// defaultName is the server (or cluster) name when the options leave it
// empty.
const defaultName = "ikto-test"

// loopback is where a server listens unless told otherwise.
var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// Options says where a server listens, where it keeps its data and how it
// differs from a plain JetStream server.
type Options struct {
	// Host is the address to listen on; the zero value is 127.0.0.1. The
	// integration harness gives its bridge's gateway, which the network
	// namespaces reach.
	Host netip.Addr
	// Port is the client port. 0 or -1 is a random port: Start lets the
	// server pick one, New picks one at once so that the URL is known
	// before the server runs. Either way a restart keeps it.
	Port int
	// StoreDir is the JetStream directory, kept across restarts so that
	// buckets survive them. Required.
	StoreDir string
	// ServerName names the server; empty is the configuration's, or
	// "ikto-test". The servers of a cluster need distinct names.
	ServerName string
	// Cluster, when its Name is set, makes the server a member of a
	// JetStream cluster; NewCluster fills it in.
	Cluster ClusterMember
	// Config is nats-server configuration text (users, accounts,
	// permissions, limits) read before the fields above, which win over
	// it. $VARIABLES it does not define come from the environment.
	Config string
	// Logger receives the server's log; nil discards it.
	Logger server.Logger
	// Configure, if set, has the last word on the server's options, for
	// what the fields above do not cover (credentials, JetStream limits).
	Configure func(*server.Options)
}

// ClusterMember is one server's part of a cluster: its route port and the
// route address of every member (itself included, which the server skips).
type ClusterMember struct {
	Name   string
	Port   int
	Routes []netip.AddrPort
}

// Server is an embedded nats-server with JetStream that can be stopped and
// started again on the same port and store, as a server that went down and
// came back.
type Server struct {
	opts Options
	name string
	mu   sync.Mutex
	srv  *server.Server
}

// New prepares a server without starting it, picking its port now if opts
// gives none: for clients that must be told the URL before the server runs.
func New(opts Options) (*Server, error) {
	s, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	if s.opts.Port <= 0 {
		p, err := FreePort(s.opts.Host)
		if err != nil {
			return nil, err
		}
		s.opts.Port = p
	}
	return s, nil
}

// Start prepares a server and starts it; with no port in opts the server
// picks one, so no other process can take it between picking and listening.
func Start(opts Options) (*Server, error) {
	s, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func prepare(opts Options) (*Server, error) {
	if !opts.Host.IsValid() {
		opts.Host = loopback
	}
	if opts.StoreDir == "" {
		return nil, errors.New("nats: no store dir")
	}
	// Parsed here so that a bad configuration fails before anything
	// listens; each start parses it again, for options no server has used.
	so, err := opts.serverOptions()
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, name: so.ServerName}, nil
}

// FreePort returns a TCP port on host that was free a moment ago.
func FreePort(host netip.Addr) (int, error) {
	ports, err := freePorts(host, 1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts is n distinct TCP ports on host that were free a moment ago:
// each stays taken until all are picked, so the kernel cannot hand out one
// twice.
func freePorts(host netip.Addr, n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
		if err != nil {
			return nil, fmt.Errorf("pick a free port on %s: %w", host, err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts the server if it is not running and waits until it accepts
// clients. A restart keeps the port and the JetStream store.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil && s.srv.Running() {
		return nil
	}
	o, err := s.opts.serverOptions()
	if err != nil {
		return err
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("nats %s: %w", s.where(), err)
	}
	log := &errorLog{next: s.opts.Logger}
	srv.SetLoggerV2(log, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		why := log.errors()
		if why == "" {
			why = "it logged no error"
		}
		return fmt.Errorf("nats %s: not ready after %s (%s)", s.where(), readyTimeout, why)
	}
	if s.opts.Port <= 0 {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	s.srv = srv
	return nil
}

// where names the server in errors, before its port may be known. The
// caller holds s.mu.
func (s *Server) where() string {
	if s.opts.Port <= 0 {
		return s.opts.Host.String()
	}
	return netip.AddrPortFrom(s.opts.Host, uint16(s.opts.Port)).String()
}

func (o Options) serverOptions() (*server.Options, error) {
	so := &server.Options{}
	if o.Config != "" {
		if err := so.ProcessConfigString(o.Config); err != nil {
			return nil, fmt.Errorf("nats config: %w", err)
		}
	}
	so.Host, so.Port = o.Host.String(), o.Port
	if so.Port <= 0 {
		so.Port = server.RANDOM_PORT
	}
	so.JetStream, so.StoreDir = true, o.StoreDir
	so.NoSigs = true
	so.NoLog = true // Start gives every server its own logger (errorLog)
	switch {
	case o.ServerName != "":
		so.ServerName = o.ServerName
	case so.ServerName == "":
		so.ServerName = defaultName
	}
	if c := o.Cluster; c.Name != "" {
		so.Cluster = server.ClusterOpts{Name: c.Name, Host: o.Host.String(), Port: c.Port}
		for _, r := range c.Routes {
			so.Routes = append(so.Routes, &url.URL{Scheme: "nats-route", Host: r.String()})
		}
	}
	if o.Configure != nil {
		o.Configure(so)
	}
	return so, nil
}

// Shutdown stops the server and waits until it is gone; clients see the
// connection drop. Shutting down a stopped server does nothing.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Close is Shutdown, for io.Closer.
func (s *Server) Close() error {
	s.Shutdown()
	return nil
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil && s.srv.Running()
}

// Addr is host:port; the port is 0 until a server started without one has
// run.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return netip.AddrPortFrom(s.opts.Host, uint16(max(s.opts.Port, 0)))
}

// Port is the client port (see Addr).
func (s *Server) Port() int { return int(s.Addr().Port()) }

// URL is the client URL, nats://host:port.
func (s *Server) URL() string {
	a := s.Addr()
	return "nats://" + net.JoinHostPort(a.Addr().String(), strconv.Itoa(int(a.Port())))
}

// UserURL is URL carrying a user and password, for servers whose Config
// requires them.
func (s *Server) UserURL(user, password string) string {
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: s.Addr().String()}
	return u.String()
}

// Name is the server's name.
func (s *Server) Name() string { return s.name }

// Embedded is the running nats-server, nil while it is stopped, for tests
// that inspect it (JetStream state, connections). A restart replaces it.
func (s *Server) Embedded() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// jetStreamState reports whether the server is running, leads its
// cluster's JetStream meta group, and is current with it (a single running
// server is all three).
func (s *Server) jetStreamState() (running, leader, current bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil || !s.srv.Running() {
		return false, false, false
	}
	if s.opts.Cluster.Name == "" {
		return true, true, true
	}
	return true, s.srv.JetStreamIsLeader(), s.srv.JetStreamIsCurrent()
}
