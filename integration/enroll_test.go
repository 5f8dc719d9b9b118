package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

// waitingForBucket is what an enrolled agent logs while the bucket is
// missing: it may not create it, and says who can.
const waitingForBucket = "bucket " + bucketName + " does not exist and this host may not create it; an operator creates it with ikto-admin init-bucket"

// TestEnroll runs membership with per-host credentials on nats-server in
// operator (JWT) mode, on the embedded current release and on Debian's 2.9:
// the operator makes the buckets (an enrolled host may not, and waits for
// it) and enrolls two hosts, one of which keeps its private keys to itself;
// both mesh with a host that has the shared credentials of an ikto 0.3.0
// mesh. Then alpha's credentials try everything a compromised host would,
// and each attempt is refused by the server naming the subject, leaving
// bravo's record, bravo's peers and the mesh as they were. Last, the
// operator evicts alpha and revokes its NATS user, which can then no longer
// connect.
func TestEnroll(t *testing.T) {
	forEachServer(t, testEnroll)
}

// enrollTestSizing keeps the account's limits small enough for the attack
// test to reach them: 80 consumers per stream.
var enrollTestSizing = enroll.Sizing{MaxHosts: 8}

func testEnroll(t *testing.T, kind string) {
	w := newEnrollWorld(t, kind, enrollTestSizing)
	hosts := w.m.addHosts("alpha", "bravo", "charlie")
	alpha, bravo, charlie := hosts[0], hosts[1], hosts[2]
	w.initBuckets("created")
	w.initBuckets("exists") // idempotent
	if code, _, stderr := w.admin("enroll", "--name", "alpha"); code != 2 || !strings.Contains(stderr, "--advertise-address") {
		t.Fatalf("enroll without --advertise-address: exit %d, %q; want 2", code, stderr)
	}

	alphaCfg := w.enrollHost(alpha)
	checkEnrolledFiles(t, w.out, "alpha", true)
	bravoKeyBefore, err := os.ReadFile(bravo.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	bravoUser, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	bravoUserKey, _ := bravoUser.PublicKey()
	bravoCfg := w.enrollHost(bravo, "--public-key", bravo.PublicKey.String(), "--user-nkey", bravoUserKey,
		"--private-key-path", bravo.KeyPath)
	checkEnrolledFiles(t, w.out, "bravo", false)
	if after, err := os.ReadFile(bravo.KeyPath); err != nil || string(after) != string(bravoKeyBefore) {
		t.Fatalf("bravo's own key file changed during its enrollment (%v)", err)
	}
	// On bravo: the documented step, `cat user.nk >> bravo.creds`.
	appendSeed(t, bravoCfg.NATSCreds, bravoUser)

	// With no bucket, an enrolled agent says who must make it and waits.
	w.deleteBuckets()
	w.m.startWith(alpha, alphaCfg)
	w.waitLog(alpha, waitingForBucket, 2)
	w.initBuckets("created")
	w.m.startWith(bravo, bravoCfg)
	w.m.startWith(charlie, w.openHostConfig(charlie))
	w.m.waitConverged(hosts)
	w.m.pingAll(hosts)
	testkit.EventuallyContext(t, convergeTimeout, "every host's first heartbeat", func(ctx context.Context) error {
		return heartbeatsWritten(ctx, hosts)
	})
	// The only refusals so far are alpha's attempts to make the bucket.
	for _, v := range w.srv.Violations() {
		if !strings.Contains(v, "STREAM.CREATE.KV_"+bucketName) {
			t.Errorf("an enrolled host needed more than its permissions: %s", v)
		}
	}

	w.checkAttacks(t, alpha, bravo, hosts)
	w.checkAdminAsHost(t, bravo, hosts)
	w.evictAndRevoke(t, alpha, []*harness.Host{bravo, charlie})

	// bravo's credentials in hostile hands, on its own keys, against
	// charlie, with delta watching.
	delta := w.m.addHosts("delta")[0]
	w.m.startWith(delta, w.openHostConfig(delta))
	w.m.waitConverged([]*harness.Host{bravo, charlie, delta})
	w.checkOwnKeyAttacks(t, bravo, charlie, delta, w.openHostConfig(charlie))
}

func (w *enrollWorld) initBuckets(want string) {
	t := w.m.t
	t.Helper()
	code, stdout, stderr := w.admin("init-bucket")
	if code != 0 || strings.Count(stdout, " "+want+":") != 2 {
		t.Fatalf("init-bucket exited %d, want both buckets %s:\n%s%s", code, want, stdout, stderr)
	}
}

// deleteBuckets deletes both buckets as the operator.
func (w *enrollWorld) deleteBuckets() {
	t := w.m.t
	t.Helper()
	js := w.adminJetStream()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	for _, b := range []string{bucketName, bucket.LiveBucket(bucketName)} {
		if err := js.DeleteKeyValue(ctx, b); err != nil {
			t.Fatalf("delete bucket %s: %v", b, err)
		}
	}
}

// adminJetStream is a JetStream handle as the operator's user.
func (w *enrollWorld) adminJetStream() jetstream.JetStream {
	_, js := adminJS(w.m.t, w.srv.URL(), nats.UserCredentials(w.adminCreds))
	return js
}

// checkEnrolledFiles checks the files enroll wrote for name: all mode 0600;
// with ownKeys false (the host keeps its keys) no .key and no seed in the
// .creds, otherwise both.
func checkEnrolledFiles(t *testing.T, dir, name string, ownKeys bool) {
	t.Helper()
	base := filepath.Join(dir, name)
	for _, f := range []string{base + ".json", base + ".creds", base + ".key"} {
		st, err := os.Stat(f)
		switch {
		case f == base+".key" && !ownKeys:
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was written (%v) for a host that keeps its private key", f, err)
			}
		case err != nil:
			t.Errorf("%s: %v", f, err)
		case st.Mode().Perm() != 0o600:
			t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	data, err := os.ReadFile(base + ".creds")
	if err != nil {
		t.Fatal(err)
	}
	_, hasSeed, err := enroll.ReadCreds(data)
	seedLine := regexp.MustCompile(`(?m)^\s*SU[A-Z2-7]+\s*$`).Match(data)
	if err != nil || hasSeed != ownKeys || seedLine != ownKeys {
		t.Errorf("%s.creds: seed present %v (%v), want %v", name, hasSeed, err, ownKeys)
	}
}

// appendSeed adds the user's seed to a creds file that holds only its JWT,
// as `cat user.nk >> NAME.creds` on the host does.
func appendSeed(t *testing.T, path string, user nkeys.KeyPair) {
	t.Helper()
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(seed, '\n')); err != nil {
		t.Fatal(err)
	}
}

// evictAndRevoke evicts host as the operator and revokes its NATS user with
// the operator's seed, pushing the account JWT to the server: the agent
// exits 4, its user can no longer connect, and the rest mesh without it.
func (w *enrollWorld) evictAndRevoke(t *testing.T, host *harness.Host, rest []*harness.Host) {
	t.Helper()
	creds := filepath.Join(w.out, host.Name+".creds")
	data, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, _, err := enroll.ReadCreds(data)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := w.admin("evict", host.PrivateAddress.String(), "--user", creds,
		"--operator-seed", w.operatorSeed, "--account-jwt", w.accountJWT, "--system-creds", w.systemCreds)
	if code != 0 || !strings.Contains(stdout, "pushed account") {
		t.Fatalf("evict --user exited %d:\n%s%s", code, stdout, stderr)
	}
	t.Logf("evict --user:\n%s", stdout)
	if code := waitExit(t, w.m.agents[host.Name]); code != 4 {
		t.Errorf("evicted agent exited %d, want 4\n%s", code, w.m.agents[host.Name].LogTail(20))
	}
	jwtNow, err := os.ReadFile(w.accountJWT)
	if err != nil {
		t.Fatal(err)
	}
	if revoked, err := enroll.Revoked(strings.TrimSpace(string(jwtNow)), uc.Subject, time.Unix(uc.IssuedAt, 0)); err != nil || !revoked {
		t.Errorf("account JWT after evict --user: revoked %v (%v), want %s revoked", revoked, err, uc.Subject)
	}
	testkit.Eventually(t, convergeTimeout, host.Name+"'s NATS user to be refused", func() error {
		nc, err := nats.Connect(w.srv.URL(), nats.UserCredentials(creds), nats.NoReconnect())
		if err == nil {
			nc.Close()
			return fmt.Errorf("%s's user still connects", host.Name)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") && !strings.Contains(strings.ToLower(err.Error()), "revoked") {
			return testkit.Permanent(fmt.Errorf("connect as %s: %w, want an authorization error", host.Name, err))
		}
		return nil
	})
	w.m.waitConverged(rest)
}
