package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// connzSubs is the part of the server's /connz?subs=1&auth=1 this test reads.
type connzSubs struct {
	Conns []struct {
		AuthorizedUser string   `json:"authorized_user"`
		NumSubs        int      `json:"subscriptions"`
		Subs           []string `json:"subscriptions_list"`
	} `json:"connections"`
}

// subsPeak follows the subscriptions of one user's connections, as the
// server counts them, and keeps the most it saw on one connection.
type subsPeak struct {
	mu   sync.Mutex
	max  int
	subs []string
}

func (p *subsPeak) sample(monitor, user string) error {
	resp, err := http.Get("http://" + monitor + "/connz?subs=1&auth=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var cz connzSubs
	if err := json.NewDecoder(resp.Body).Decode(&cz); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cz.Conns {
		if c.AuthorizedUser == user && c.NumSubs > p.max {
			p.max, p.subs = c.NumSubs, slices.Sorted(slices.Values(c.Subs))
		}
	}
	return nil
}

// TestEnrolledAgentSubscriptions runs an agent as an enrolled host, with the
// user limits enroll signs (enroll.HostLimits), through its start, a server
// restart and its reconnect, and measures the subscriptions its connection
// holds at once: what enroll.HostMaxSubscriptions is chosen from. The
// server must never refuse the agent a subscription or a message.
func TestEnrolledAgentSubscriptions(t *testing.T) {
	auth, err := enroll.NewSizedAuthority("test", enroll.Sizing{MaxHosts: 4})
	if err != nil {
		t.Fatal(err)
	}
	serverLog := &serverErrors{}
	s := natstest.StartWith(t, natsserver.Options{
		Config: auth.ServerConfig(enroll.Resolver{}) + "http_port: -1\n",
		Logger: serverLog,
	})
	dir := t.TempDir()
	writeCreds := func(name string, data []byte) string {
		path := filepath.Join(dir, name+".creds")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	admin, err := enroll.UserCreds(auth.Account, "admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, s.URL(), nats.UserCredentials(writeCreds("admin", admin)))
	ctx := context.Background()
	kv, err := bucket.OpenBucket(ctx, js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.OpenLiveBucket(ctx, js, "ikto-test", true, 0); err != nil {
		t.Fatal(err)
	}
	putPeer(t, kv, "fd10:1::/48")
	putPeer(t, kv, "fd10:2::/48")

	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := user.PublicKey()
	prefix := netip.MustParsePrefix("fd10:77::/48")
	subjects, err := enroll.Permissions(enroll.Host{Bucket: "ikto-test", Prefix: prefix, InboxPrefix: enroll.InboxPrefix(userKey)})
	if err != nil {
		t.Fatal(err)
	}
	token, err := enroll.Sign(auth.Account, enroll.User{Name: "host", Key: userKey, Subjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := enroll.Creds(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	cfg := newConfig(t, s.URL(), prefix.String())
	cfg.NATSCreds, cfg.NATSInboxPrefix = writeCreds("host", creds), enroll.InboxPrefix(userKey)

	peak := &subsPeak{}
	sampling, stop := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			// No server between Shutdown and Start: nothing to sample.
			if srv := s.Embedded(); srv != nil {
				if addr := srv.MonitorAddr(); addr != nil {
					_ = peak.sample(addr.String(), userKey)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	h := start(t, cfg, nil)
	h.waitReady(t)
	putPeer(t, kv, "fd10:3::/48")
	waitPeers(t, h, 3)

	s.Shutdown()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	// The admin connection reconnects on its own time: a put sent before it
	// has may go unanswered, so try again until one lands.
	k, _ := wgtypes.GeneratePrivateKey()
	r := peer.Record{Name: "remote-4", PublicKey: k.PublicKey().String(), AdvertiseAddress: "198.18.0.20", AllowedIP: "fd10:4::/48", WGPort: 51820}
	testkit.Eventually(t, waitTimeout, "a put after the server restart", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := kv.Put(pctx, peer.Key(netip.MustParsePrefix(r.AllowedIP)), r.Encode())
		return err
	})
	waitPeers(t, h, 4)
	stop()
	<-sampled

	peak.mu.Lock()
	defer peak.mu.Unlock()
	t.Logf("the most subscriptions on the agent's connection at once: %d %q (limit %d)", peak.max, peak.subs, enroll.HostMaxSubscriptions)
	if peak.max == 0 || peak.max > enroll.HostMaxSubscriptions/4 {
		t.Errorf("the agent held %d subscriptions at once; enroll.HostMaxSubscriptions (%d) is chosen for at most a quarter of it", peak.max, enroll.HostMaxSubscriptions)
	}
	for _, refused := range []string{"Maximum Subscriptions", "Maximum Payload"} {
		if log := serverLog.String(); strings.Contains(log, refused) {
			t.Errorf("the server refused the agent (%s):\n%s", refused, log)
		}
	}
}

// serverErrors keeps the errors and warnings a nats-server logs.
type serverErrors struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *serverErrors) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", v...)
}

func (l *serverErrors) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *serverErrors) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *serverErrors) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *serverErrors) Fatalf(format string, v ...any) { l.add(format, v...) }
func (*serverErrors) Noticef(string, ...any)           {}
func (*serverErrors) Debugf(string, ...any)            {}
func (*serverErrors) Tracef(string, ...any)            {}

// waitPeers waits until the agent's device has n peers.
func waitPeers(t *testing.T, h *host, n int) {
	t.Helper()
	testkit.Eventually(t, waitTimeout, fmt.Sprintf("%d peers on the device", n), func() error {
		if got := len(peerPrefixes(t, h.dev)); got != n {
			return fmt.Errorf("%d peers", got)
		}
		return nil
	})
}
