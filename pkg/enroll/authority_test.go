package enroll

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// writeCreds writes creds to a file of the test and returns its path.
func writeCreds(t *testing.T, name string, creds []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAuthority makes an authority sized by sizing and starts the embedded
// nats-server with its configuration; adminCreds is the creds file of a user
// with the account's full rights.
func startAuthority(t *testing.T, sizing Sizing) (auth *Authority, s *natsserver.Server, adminCreds string) {
	t.Helper()
	auth, err := NewSizedAuthority("test", sizing)
	if err != nil {
		t.Fatal(err)
	}
	s = natstest.StartWith(t, natsserver.Options{Config: auth.ServerConfig(Resolver{})})
	admin, err := UserCreds(auth.Account, "admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	return auth, s, writeCreds(t, "admin", admin)
}

// TestEnrolledUserOnAnEmbeddedServer runs the embedded (current)
// nats-server with the authority's configuration: an enrolled user, with
// its own inbox prefix, opens both buckets, claims its prefix, watches
// (bucket.Scan), reads and writes its heartbeat, and is refused another
// host's record. Debian's 2.9 is covered by integration.TestEnroll.
func TestEnrolledUserOnAnEmbeddedServer(t *testing.T) {
	auth, s, adminCreds := startAuthority(t, DefaultSizing())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adminConn := dial(t, config.NATS{URLs: []string{s.URL()}, Creds: adminCreds, Bucket: "ikto-mesh", Replicas: 1})
	if _, err := adminConn.Prepare(ctx); err != nil {
		t.Fatal(err)
	}

	hostCredsPath, inbox := hostCreds(t, auth, "host-a")
	conn := dial(t, config.NATS{URLs: []string{s.URL()}, Creds: hostCredsPath, Bucket: "ikto-mesh", InboxPrefix: inbox})
	checkEnrolledHost(ctx, t, conn)
}

func dial(t *testing.T, s config.NATS) *bucket.Conn {
	t.Helper()
	c, err := bucket.Dial(s, bucket.Client{Name: "enroll-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func checkEnrolledHost(ctx context.Context, t *testing.T, conn *bucket.Conn) {
	t.Helper()
	m, err := conn.Open(ctx, false)
	if err != nil {
		t.Fatalf("open the bucket as the host: %v", err)
	}
	self := peer.Record{Name: "host-a", PublicKey: "5KW/aOOWAO5j9EH3Y4fL6a/GJ3j+le27+lQNqOx2qig=", AdvertiseAddress: "192.0.2.1", AllowedIP: specPrefix.String(), WGPort: 51820}
	if _, _, err := m.Claim(ctx, self, nil); err != nil {
		t.Fatalf("claim as the host: %v", conn.Explain(err))
	}
	entries, err := m.Records(ctx)
	if err != nil || len(entries) != 1 {
		t.Fatalf("watch as the host: %d entries, %v", len(entries), conn.Explain(err))
	}
	// A first heartbeat, one with compare-and-set on it, and one on a
	// stale revision, which reads the key back (WriteHeartbeat).
	hb := bucket.Heartbeat{PublicKey: self.PublicKey, Name: self.Name, At: time.Now()}
	rev, _, err := m.WriteHeartbeat(ctx, specPrefix, hb, 0)
	if err != nil {
		t.Fatalf("heartbeat as the host: %v", conn.Explain(err))
	}
	if _, _, err := m.WriteHeartbeat(ctx, specPrefix, hb, rev); err != nil {
		t.Fatalf("heartbeat after the first as the host: %v", conn.Explain(err))
	}
	if _, found, err := m.WriteHeartbeat(ctx, specPrefix, hb, rev); err != nil || found == nil || found.PublicKey != self.PublicKey {
		t.Fatalf("heartbeat on a stale revision as the host = %+v, %v; want the heartbeat found in its place", found, conn.Explain(err))
	}
	other := self
	other.AllowedIP = "fd10:1::/48"
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _, err = m.Claim(wctx, other, nil)
	if err = conn.Explain(err); !errors.Is(err, bucket.ErrPermission) {
		t.Fatalf("claim of another prefix as the host = %v, want ErrPermission", err)
	}
	if held, err := m.Claimed(ctx, netip.MustParsePrefix(other.AllowedIP)); err != nil || held {
		t.Fatalf("the refused claim was written (%v)", err)
	}
}
