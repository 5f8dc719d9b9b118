package natsserver_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
)

// A server comes back on its port with its store: a client that reconnects
// finds the bucket and its value.
func TestRestartKeepsPortAndStore(t *testing.T) {
	s := natstest.Start(t)
	url := s.URL()
	if s.Port() == 0 || !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("URL %q, port %d: want a real port on loopback", url, s.Port())
	}
	_, js := natstest.Connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	if s.Running() {
		t.Fatal("running after Shutdown")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.URL() != url {
		t.Fatalf("URL after restart %q, want %q", s.URL(), url)
	}
	var e jetstream.KeyValueEntry
	testkit.EventuallyContext(t, 30*time.Second, "the client back after a restart", func(ctx context.Context) (err error) {
		// Each read gets its own bound, as an agent's attempts do: a
		// request caught in the reconnect can go unanswered, and must not
		// hold the whole wait.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		e, err = kv.Get(ctx, "k")
		return err
	})
	if string(e.Value()) != "v" {
		t.Errorf("got %q after a restart, want v", e.Value())
	}
}

// New picks the port at once, for a client that starts before its server.
func TestNewKnowsItsURLBeforeItRuns(t *testing.T) {
	s := natstest.New(t, natsserver.Options{})
	if s.Port() == 0 {
		t.Fatal("no port picked")
	}
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("connected to %s before Start", s.Addr())
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	natstest.Connect(t, s.URL())
}

// Config text brings users; fields the caller sets still win (JetStream on,
// the host and port), and Configure has the last word.
func TestConfigLoggerAndConfigure(t *testing.T) {
	log := &lines{}
	s := natstest.StartWith(t, natsserver.Options{
		Config:    `authorization { user: ikto, password: secret }` + "\nport: 1\n",
		Logger:    log,
		Configure: func(o *server.Options) { o.MaxPayload = 4096 },
	})
	if _, err := nats.Connect(s.URL()); err == nil {
		t.Fatal("connected without credentials")
	}
	nc, js := natstest.Connect(t, s.UserURL("ikto", "secret"))
	if got := nc.MaxPayload(); got != 4096 {
		t.Errorf("max payload %d, want Configure's 4096", got)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Errorf("JetStream with a configuration: %v", err)
	}
	if log.count() == 0 {
		t.Error("the logger got nothing")
	}
	if s.Name() != "ikto-test" {
		t.Errorf("name %q, want the default", s.Name())
	}
}

// A server nats-server refuses to build is an error naming where it would
// have listened, not a hang.
func TestStartErrorNamesTheAddress(t *testing.T) {
	s, err := natsserver.New(natsserver.Options{StoreDir: t.TempDir(), ServerName: "no spaces allowed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), s.Addr().String()) {
		t.Fatalf("Start = %v, want an error naming %s", err, s.Addr())
	}
	if s.Running() {
		t.Fatal("running after a failed start")
	}
}

// A server whose port another socket took between picking and listening
// says so: the listener's error, not only "not ready".
func TestStartOnATakenPortSaysWhy(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := natsserver.New(natsserver.Options{StoreDir: t.TempDir(), Port: l.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a taken port = %v, want the listener's error", err)
	}
}

func TestBadConfigFailsBeforeListening(t *testing.T) {
	if _, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Config: "authorization {"}); err == nil {
		t.Fatal("started with a broken configuration")
	}
	if _, err := natsserver.Start(natsserver.Options{}); err == nil {
		t.Fatal("started without a store dir")
	}
}

// A cluster serves an R3 bucket, and a member stopped and started again
// comes back on its port and catches up.
func TestClusterMemberRestarts(t *testing.T) {
	c := natstest.Cluster(t, natsserver.ClusterOptions{})
	if len(c.Servers) != 3 {
		t.Fatalf("%d servers, want 3", len(c.Servers))
	}
	_, js := natstest.Connect(t, c.URL())
	testkit.EventuallyContext(t, 30*time.Second, "an R3 bucket", func(ctx context.Context) error {
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3})
		return err
	})
	down := c.Servers[0]
	url := down.URL()
	down.Shutdown()
	if got := len(c.Running()); got != 2 {
		t.Fatalf("%d running with one down, want 2", got)
	}
	if err := down.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ServerAt(url); err != nil || got != down {
		t.Errorf("ServerAt(%s) = %v, %v; want the restarted %s", url, got, err, down.Name())
	}
	if _, err := c.ServerAt("nats://127.0.0.1:1"); err == nil {
		t.Error("ServerAt found a server where none listens")
	}
}

// lines is a server.Logger that counts what it is given.
type lines struct {
	mu sync.Mutex
	n  int
}

func (l *lines) add()                   { l.mu.Lock(); l.n++; l.mu.Unlock() }
func (l *lines) count() int             { l.mu.Lock(); defer l.mu.Unlock(); return l.n }
func (l *lines) Noticef(string, ...any) { l.add() }
func (l *lines) Warnf(string, ...any)   { l.add() }
func (l *lines) Fatalf(string, ...any)  { l.add() }
func (l *lines) Errorf(string, ...any)  { l.add() }
func (l *lines) Debugf(string, ...any)  { l.add() }
func (l *lines) Tracef(string, ...any)  { l.add() }

var _ server.Logger = (*lines)(nil)
