package bucket

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// While no server answers, the connection's last error says why (here a
// refused port), logged once however often the retry fails the same way.
func TestLastErrorSaysWhyNoServerAnswers(t *testing.T) {
	port, err := natsserver.FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	logs := logbuf.New(t, "connection")
	log := slog.New(slog.NewTextHandler(logs, nil))
	c, err := Dial(config.NATS{URLs: []string{"nats://127.0.0.1:" + strconv.Itoa(port)}}, Client{Persistent: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	testkit.Eventually(t, 10*time.Second, "the refused port in LastError", func() error {
		if err := c.LastError(); err == nil || !strings.Contains(err.Error(), "connection refused: nothing listens there; is nats-server running") {
			return fmt.Errorf("LastError = %v", err)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // more retries, failing the same way
	if n := strings.Count(logs.String(), "cannot reach NATS"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once:\n%s", n, logs.String())
	}
}

// A one-shot dial (ikto-init, ikto-admin) says why no server answered, as
// nats.go's "no servers available for connection" does not.
func TestDialSaysWhyNoServerAnswers(t *testing.T) {
	port, err := natsserver.FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(config.NATS{URLs: []string{"nats://127.0.0.1:" + strconv.Itoa(port)}}, Client{Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "connection refused: nothing listens there") {
		t.Errorf("Dial to a closed port = %v, want the refusal and its fix", err)
	}
}

// Each way of failing to reach a server names its own fix.
func TestExplainDialTellsCausesApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "nothing listens there"},
		{"unknown host", &net.DNSError{Err: "no such host", Name: "nats-typo", IsNotFound: true}, "does not resolve; check its spelling"},
		{"no route", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, "no route to that address"},
		{"silent", &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}, "a firewall drops the traffic"},
		{"untrusted certificate", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), "set nats_tls_ca"},
		{"TLS on one side", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "use tls:// in nats_url"},
		{"server wants TLS", nats.ErrSecureConnRequired, "the server wants TLS"},
		{"bad password", nats.ErrAuthorization, "refused the credentials"},
	} {
		got := explainDial(tc.err)
		if !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.want) {
			t.Errorf("%s: explainDial(%v) = %v, want it wrapped with %q", tc.name, tc.err, got, tc.want)
		}
	}
}

// The agent's own Close at shutdown is not a connection closed for good,
// whatever error the connection met earlier (here a slow consumer).
func TestOwnCloseIsNotClosedForGood(t *testing.T) {
	s := natstest.Start(t)
	logs := logbuf.New(t, "connection")
	c, err := Dial(config.NATS{URLs: []string{s.URL()}}, Client{Persistent: true, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	sub, err := c.NC.Subscribe("slow", func(*nats.Msg) { <-hold })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := c.NC.Publish("slow", nil); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "a slow consumer in LastError", func() error {
		if err := c.NC.LastError(); !errors.Is(err, nats.ErrSlowConsumer) {
			return fmt.Errorf("LastError = %v", err)
		}
		return nil
	})
	close(hold)
	c.Close()
	testkit.Eventually(t, 5*time.Second, "closed", func() error {
		if !c.NC.IsClosed() {
			return errors.New("still open")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // the closed handler runs on its own goroutine
	if strings.Contains(logs.String(), "closed for good") {
		t.Errorf("our own Close was logged as a connection closed for good:\n%s", logs.String())
	}
}
