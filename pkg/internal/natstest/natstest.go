// Package natstest starts real embedded nats-servers with JetStream for the
// pkg module's tests: random port, temporary store, shut down by t.Cleanup.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running embedded server.
type Server struct{ *server.Server }

// Start runs a JetStream server on 127.0.0.1 and a random port.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartOn(t, -1, t.TempDir())
}

// StartOn runs a JetStream server on port (-1 = random) with its store in dir,
// so a test can stop it and start it again on the same port with the same data.
func StartOn(t testing.TB, port int, dir string) *Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not become ready in 10s")
	}
	t.Cleanup(s.Shutdown)
	return &Server{Server: s}
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.Addr().(*net.TCPAddr).Port }

// Connect opens a client connection closed by t.Cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
