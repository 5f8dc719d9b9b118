package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// The admin socket answers from the agent's first moment, with its state,
// also while no NATS server answers; then it says synced.
func TestSocketAnswersWhileNATSIsDown(t *testing.T) {
	s := natstest.New(t, natsserver.Options{})
	h := start(t, newConfig(t, s.URL(), "fd10:1::/48"), nil)
	var st api.Status
	testkit.Eventually(t, waitTimeout, "the socket to answer", func() error {
		var err error
		st, err = api.NewClient(h.socket).Status(context.Background())
		return err
	})
	if st.State != "waiting for NATS" || st.Synced || st.NATS.Connected || st.Self.AllowedIP != "fd10:1::/48" {
		t.Fatalf("status while NATS is down = %+v, want waiting for NATS, not synced, not connected, self", st)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
	testkit.Eventually(t, waitTimeout, "status to say synced", func() error {
		st, err := api.NewClient(h.socket).Status(context.Background())
		if err != nil {
			return err
		}
		if st.State != "synced" || !st.Synced || st.Claim != "held" || st.Backend != "fake" {
			return fmt.Errorf("state %q, synced %v, claim %q, backend %q", st.State, st.Synced, st.Claim, st.Backend)
		}
		return nil
	})
}

// Type=notify: READY=1 is sent once, after the first pass, with STATUS lines.
func TestSystemdReadyOnceAfterTheFirstPass(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	_, kv, cfg := meshOf(t, "fd10:2::/48")
	h := start(t, cfg, nil)
	h.waitReady(t)
	putPeer(t, kv, "fd10:3::/48") // a later pass must not say READY again
	testkit.Eventually(t, waitTimeout, "the second peer", testkit.True(func() bool { return peerPrefixes(t, h.dev)["fd10:3::/48"] }))
	var got []string
	ready := 0
	testkit.Eventually(t, waitTimeout, "READY and a synced STATUS", func() error {
		for {
			select {
			case m := <-msgs:
				got = append(got, m)
				ready += strings.Count(m, "READY=1")
				continue
			default:
			}
			break
		}
		if ready == 0 || !strings.Contains(strings.Join(got, "\n"), "STATUS=synced") {
			return fmt.Errorf("messages so far: %q", got)
		}
		return nil
	})
	if ready != 1 {
		t.Fatalf("READY=1 sent %d times, want once: %q", ready, got)
	}
	if !strings.HasPrefix(got[0], "READY=1\nSTATUS=synced") {
		t.Errorf("first message %q, want READY=1 with the synced status", got[0])
	}
}

// metrics_listen serves /metrics over TCP, build info included.
func TestMetricsOverTCP(t *testing.T) {
	s := natstest.Start(t)
	cfg := newConfig(t, s.URL(), "fd10:1::/48")
	cfg.MetricsListen = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	h := start(t, cfg, nil)
	h.waitReady(t)
	var body string
	testkit.Eventually(t, waitTimeout, "metrics over TCP", func() error {
		resp, err := http.Get("http://" + cfg.MetricsListen + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	for _, want := range []string{"ikto_peers_configured 0", `ikto_build_info{commit="unknown",goversion="go`, "ikto_claim_contested 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("TCP /metrics lacks %q", want)
		}
	}
}

// A reloaded config changes the hooks, resync and keepalive at once; a field
// that needs a restart is named and keeps its running value.
func TestReloadAppliesWhatMayChange(t *testing.T) {
	_, _, cfg := meshOf(t, "fd10:2::/48")
	reloads := make(chan *config.Settings, 1)
	h := startWith(t, cfg, nil, func(o *Options) { o.Reload = reloads })
	h.waitReady(t)

	next := *cfg
	next.PersistentKeepalive = 25
	next.WGPort = 51999
	reloads <- settings(t, &next)
	testkit.Eventually(t, waitTimeout, "the new keepalive on the device", func() error {
		peers, err := h.dev.Peers()
		if err != nil {
			return err
		}
		if len(peers) != 1 || peers[0].PersistentKeepaliveInterval != 25*time.Second {
			return fmt.Errorf("peers %+v", peers)
		}
		return nil
	})
	logs := h.logs.String()
	for _, want := range []string{`needs_restart=[wg_port]`, `applied=[persistent_keepalive]`, "field=wg_port"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	st, err := api.NewClient(h.socket).Status(context.Background())
	if err != nil || st.Self.WGPort != 51820 {
		t.Errorf("status after the reload: port %d, %v; want the running 51820", st.Self.WGPort, err)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
