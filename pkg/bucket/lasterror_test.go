package bucket

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
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
		if err := c.LastError(); err == nil || !strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("LastError = %v", err)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // more retries, failing the same way
	if n := strings.Count(logs.String(), "cannot reach NATS"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once:\n%s", n, logs.String())
	}
}
