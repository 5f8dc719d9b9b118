package integration_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// deniedWriteTimeout bounds a write the server is expected to refuse: a
// refused JetStream publish may surface as a timeout rather than an error.
const deniedWriteTimeout = 3 * time.Second

// privilegeWorld is a mesh whose NATS server runs the documented
// least-privilege configuration.
type privilegeWorld struct {
	m              *mesh
	srv            *harness.ConfNATS
	hosts          []*harness.Host
	hostURL, opURL string
	hostPW         string
	hostViolations []string // what the host user's refused attempts logged
	store          string   // the server's JetStream directory
}

// TestLeastPrivilege runs nats-server with exactly the configuration the
// README documents (harness/least-privilege.conf): hosts that only have the
// host user create the buckets, join and mesh without a single permission
// violation, but cannot revoke a key; the operator user can list and evict.
func TestLeastPrivilege(t *testing.T) {
	w := newPrivilegeWorld(t)
	// Join: no bucket exists yet, so the first agent creates both.
	for _, h := range w.hosts {
		w.m.startWith(h, h.Config(w.hostURL, bucketName))
	}
	w.m.waitConverged(w.hosts)
	w.m.pingAll(w.hosts)
	testkit.EventuallyContext(t, convergeTimeout, "every host's first heartbeat", func(ctx context.Context) error {
		return heartbeatsWritten(ctx, w.hosts)
	})
	if v := w.srv.Violations(); len(v) > 0 {
		t.Fatalf("hosts needed more than the documented permissions:\n%s", strings.Join(v, "\n"))
	}
	for _, h := range w.hosts {
		if logs := w.m.agents[h.Name].Logs(); strings.Contains(logs, w.hostPW) {
			t.Errorf("agent on %s logged the NATS password", h.Name)
		}
	}
	w.checkHostCannotRevoke(t)
	w.checkOperatorEvicts(t)
	w.checkWipedServer(t)
}

// checkWipedServer restarts the server with an empty store: the buckets are
// gone, and with them charlie's revocation. The hosts make the buckets again
// and write their records back; they may not write the revocation back, and
// say so once each instead of retrying, while still refusing charlie's key.
func (w *privilegeWorld) checkWipedServer(t *testing.T) {
	t.Helper()
	before := len(w.srv.Violations())
	w.srv.Shutdown()
	entries, err := os.ReadDir(w.store)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(w.store, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.srv.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	live := w.hosts[:2]
	const said = "may not write them back"
	for _, h := range live {
		testkit.EventuallyContext(t, convergeTimeout, h.Name+" to say it may not write the revocation back", func(context.Context) error {
			if err := w.m.exitedEarly(live); err != nil {
				return err
			}
			if !strings.Contains(w.m.agents[h.Name].Logs(), said) {
				return fmt.Errorf("not yet; its log ends:\n%s", w.m.agents[h.Name].LogTail(15))
			}
			return nil
		})
	}
	ctx := context.Background()
	op, err := harness.OpenExistingBucket(ctx, w.opURL, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = op.Close() })
	testkit.EventuallyContext(t, convergeTimeout, "alpha's and bravo's records back", func(ctx context.Context) error {
		for _, h := range live {
			if _, err := op.Record(ctx, h.Prefix()); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("server wiped: the hosts made the bucket again and wrote their records back within %s of its restart",
		time.Since(restarted).Round(time.Millisecond))
	// charlie comes back with its revoked key, as the operator writes it:
	// the hosts that saw the revocation still refuse it.
	r := peer.Record{Name: "charlie", PublicKey: w.hosts[2].PublicKey.String(), AdvertiseAddress: w.hosts[2].Addr.String(),
		AllowedIP: w.hosts[2].Prefix().String(), WGPort: 51820}
	if _, err := op.Create(ctx, peer.Key(w.hosts[2].Prefix()), r.Encode()); err != nil {
		t.Fatal(err)
	}
	holdSteady(t, w.m, live, 2*time.Second)
	for _, h := range live {
		if n := strings.Count(w.m.agents[h.Name].Logs(), said); n != 1 {
			t.Errorf("%s said %d times that it may not write the revocation back, want once", h.Name, n)
		}
	}
	for _, v := range w.srv.Violations()[before:] {
		if !strings.Contains(v, "user:"+harness.HostUser) || !strings.Contains(v, ".revoked.") {
			t.Errorf("unexpected permission violation after the wipe: %s", v)
		}
	}
}

func newPrivilegeWorld(t *testing.T) *privilegeWorld {
	t.Helper()
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	n := harnesstest.Network(t)
	hostPW, opPW := randomSecret(t), randomSecret(t)
	t.Setenv("IKTO_HOST_PASSWORD", hostPW)
	t.Setenv("IKTO_OPERATOR_PASSWORD", opPW)
	store := t.TempDir()
	srv, err := harness.StartConfNATS(natsserver.Options{Host: n.Gateway, StoreDir: store}, harness.LeastPrivilegeConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	m := &mesh{t: t, net: n, bins: bins, agents: map[string]*harness.Agent{}}
	return &privilegeWorld{
		m: m, srv: srv, store: store, hosts: m.addHosts("alpha", "bravo", "charlie"), hostPW: hostPW,
		hostURL: srv.UserURL(harness.HostUser, hostPW), opURL: srv.UserURL(harness.OperatorUser, opPW),
	}
}

// checkHostCannotRevoke tries, as the host user, to revoke bravo's key,
// directly and through ikto-admin evict: both must fail, leave no
// revocation, and change nothing in the mesh.
func (w *privilegeWorld) checkHostCannotRevoke(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	bravo := w.hosts[1]
	op := harnesstest.BucketAt(t, w.opURL, bucketName)
	hostKV := harnesstest.BucketAt(t, w.hostURL, bucketName)
	live := harnesstest.BucketAt(t, w.opURL, bucket.LiveBucket(bucketName))
	for _, h := range w.hosts {
		if _, err := live.Get(ctx, bucket.HeartbeatKey(h.Prefix())); err != nil {
			t.Errorf("heartbeat of %s, read as the operator: %v", h.Name, err)
		}
	}

	rv, _ := json.Marshal(peer.Revocation{PublicKey: bravo.PublicKey.String(), AllowedIP: bravo.Prefix().String(), Name: "bravo", RevokedAt: time.Now().UTC()})
	wctx, cancel := context.WithTimeout(ctx, deniedWriteTimeout)
	_, err := hostKV.Create(wctx, peer.RevokedKey(bravo.PublicKey), rv)
	cancel()
	if err == nil {
		t.Fatalf("the host user wrote %s", peer.RevokedKey(bravo.PublicKey))
	}
	t.Logf("host user writing revoked.*: %v", err)
	code, stdout, stderr := runAdmin(t, w.m.bins, "--nats-url", w.hostURL, "evict", bravo.PrivateAddress.String())
	if code == 0 {
		t.Fatalf("ikto-admin evict as the host user succeeded:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(strings.ToLower(stderr), "permission") {
		t.Errorf("evict as the host user failed without saying it lacks permission:\n%s", stderr)
	}
	if err := op.Absent(ctx, peer.RevokedKey(bravo.PublicKey)); err != nil {
		t.Fatalf("bravo's key after the host user's attempts: %v, want no revocation", err)
	}
	if err := w.m.exitedEarly(w.hosts); err != nil {
		t.Fatal(err)
	}
	if err := harness.CheckMesh(w.hosts); err != nil {
		t.Fatalf("the host user's attempts changed the mesh: %v", err)
	}
	w.hostViolations = w.srv.Violations()
	for _, v := range w.hostViolations {
		if !strings.Contains(v, "user:"+harness.HostUser) || !strings.Contains(v, ".revoked.") {
			t.Errorf("unexpected permission violation: %s", v)
		}
	}
	if len(w.hostViolations) == 0 {
		t.Errorf("the server logged no violation for the host user's writes to revoked.*")
	}
}

// checkOperatorEvicts lists and evicts charlie as the operator user, which
// must need nothing beyond its documented permissions.
func (w *privilegeWorld) checkOperatorEvicts(t *testing.T) {
	t.Helper()
	charlie := w.hosts[2]
	if code, stdout, stderr := runAdmin(t, w.m.bins, "--nats-url", w.opURL, "-o", "json", "list"); code != 0 {
		t.Fatalf("list as the operator exited %d:\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runAdmin(t, w.m.bins, "--nats-url", w.opURL, "evict", charlie.PrivateAddress.String()); code != 0 {
		t.Fatalf("evict as the operator exited %d:\n%s%s", code, stdout, stderr)
	}
	if code := waitExit(t, w.m.agents[charlie.Name]); code != 4 {
		t.Fatalf("evicted agent exited %d, want 4\n%s", code, w.m.agents[charlie.Name].LogTail(20))
	}
	w.m.waitConverged(w.hosts[:2])
	if v := w.srv.Violations(); len(v) != len(w.hostViolations) {
		t.Errorf("the operator needed more than the documented permissions:\n%s", strings.Join(v[len(w.hostViolations):], "\n"))
	}
}

// heartbeatsWritten is nil once every host's agent reports a heartbeat
// written (ikto_heartbeat_age_seconds is -1 before the first).
func heartbeatsWritten(ctx context.Context, hosts []*harness.Host) error {
	for _, h := range hosts {
		age, err := metricValue(ctx, h.SocketPath, "ikto_heartbeat_age_seconds")
		if err != nil {
			return err
		}
		if age < 0 {
			return errors.New(h.Name + ": no heartbeat written yet")
		}
	}
	return nil
}

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
