package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
)

// startAuthServer runs a JetStream server that knows one user, ikto/secret.
func startAuthServer(t *testing.T) *natsserver.Server {
	t.Helper()
	return natstest.StartWith(t, natsserver.Options{Config: `authorization { user: ikto, password: secret }`})
}

// A wrong password is not an outage: nats.go closes the connection for good,
// and the agent must say so and stop (exit 1) instead of retrying "connection
// closed" forever — and must not print the password it was given.
func TestAgentStopsOnRejectedCredentials(t *testing.T) {
	s := startAuthServer(t)
	port := s.Port()
	cfg := newConfig(t, fmt.Sprintf("nats://ikto:wrong-password@127.0.0.1:%d", port), "fd10:77::/48")
	h := start(t, cfg, nil)
	err := h.waitExit(t)
	if err == nil {
		t.Fatal("agent with a wrong password ran on")
	}
	msg := err.Error()
	for _, want := range []string{"closed the connection", "nats_url", "xxxxx"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "wrong-password") || strings.Contains(h.logs.String(), "wrong-password") {
		t.Errorf("the password reached the error or the log:\n%s\n%s", msg, h.logs.String())
	}
	select {
	case <-h.opened:
		t.Error("the device was opened although the agent never got into NATS")
	default:
	}

	// The right password joins.
	good := newConfig(t, fmt.Sprintf("nats://ikto:secret@127.0.0.1:%d", port), "fd10:78::/48")
	start(t, good, nil).waitReady(t)
}
