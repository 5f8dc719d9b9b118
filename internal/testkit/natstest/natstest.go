// Package natstest gives tests a real embedded JetStream nats-server (see
// package natsserver) and clients of it, in the form the nats-server
// project's own tests use: a random port, the store in t.TempDir(), ready
// before the test goes on, and everything closed by t.Cleanup. Every helper
// fails the test instead of returning an error.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
)

// Start runs a JetStream server on 127.0.0.1 and a random port, with its
// store in a temporary directory, until the test ends. s.Shutdown and
// s.Start stop it and bring it back on the same port with the same store.
func Start(tb testing.TB) *natsserver.Server {
	tb.Helper()
	return StartWith(tb, natsserver.Options{})
}

// StartWith is Start with options (a host, a configuration with users, a
// logger…); an empty StoreDir is a temporary directory.
func StartWith(tb testing.TB, opts natsserver.Options) *natsserver.Server {
	tb.Helper()
	return newServer(tb, natsserver.Start, opts)
}

// New is StartWith without the start: the port is picked and the URL known
// at once, for clients that must be running before their server is. The
// test calls s.Start when it is time.
func New(tb testing.TB, opts natsserver.Options) *natsserver.Server {
	tb.Helper()
	return newServer(tb, natsserver.New, opts)
}

// newServer makes a server with create (natsserver.Start or New), its
// store in a temporary directory unless opts names one, and shuts it down
// when the test ends.
func newServer(tb testing.TB, create func(natsserver.Options) (*natsserver.Server, error), opts natsserver.Options) *natsserver.Server {
	tb.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = tb.TempDir()
	}
	s, err := create(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// Cluster starts a JetStream cluster (3 servers unless opts says otherwise;
// an empty Dir is a temporary directory), waits for its meta leader, and
// shuts it down when the test ends.
func Cluster(tb testing.TB, opts natsserver.ClusterOptions) *natsserver.Cluster {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	c, err := natsserver.NewCluster(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Shutdown)
	if err := c.Start(); err != nil {
		tb.Fatal(err)
	}
	return c
}

// Connect opens a client connection to url (one server or several,
// comma-separated) and a JetStream handle on it; the connection is closed
// when the test ends.
func Connect(tb testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream on %s: %v", url, err)
	}
	return nc, js
}
