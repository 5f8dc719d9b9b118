// Package natstest is the pkg module's first NATS test API (Start, StartOn,
// Connect), kept for the agent and store tests until they move to
// internal/testkit/natstest, over which it is a thin layer: the server is
// started the one way every test starts it.
package natstest

import (
	"net"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	tk "github.com/ikto-mesh/ikto/internal/testkit/natstest"
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
	s := tk.StartWith(t, natsserver.Options{Port: port, StoreDir: dir})
	return &Server{Server: s.Embedded()}
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.Addr().(*net.TCPAddr).Port }

// Connect opens a client connection closed by t.Cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return tk.Connect(t, url)
}
