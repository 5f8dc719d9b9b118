package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// enrollFixture is an open JetStream server with both buckets made by
// init-bucket, an account seed file and an output directory.
type enrollFixture struct {
	url, seed, dir string
	account        nkeys.KeyPair
	js             jetstream.JetStream
}

func newEnrollFixture(t *testing.T) *enrollFixture {
	t.Helper()
	url, js := startNATS(t)
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := account.Seed()
	f := &enrollFixture{url: url, account: account, js: js, seed: filepath.Join(t.TempDir(), "ikto.nk"), dir: filepath.Join(t.TempDir(), "out")}
	if err := os.WriteFile(f.seed, append(append([]byte(nil), seed...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"created", "exists"} { // idempotent
		code, stdout, stderr := exec(t, "init-bucket", "--nats-url", url)
		if code != 0 || strings.Count(stdout, " "+want+":") != 2 {
			t.Fatalf("init-bucket: exit %d, want both buckets %s:\n%s%s", code, want, stdout, stderr)
		}
	}
	return f
}

// enroll runs enroll name with the fixture's server, seed and directory.
func (f *enrollFixture) enroll(t *testing.T, name string, extra ...string) (int, string, string) {
	t.Helper()
	args := append([]string{"enroll", "--nats-url", f.url, "--name", name, "--advertise-address", "192.0.2.10",
		"--account-seed", f.seed, "-o", f.dir}, extra...)
	return exec(t, args...)
}

func (f *enrollFixture) read(t *testing.T, name, ext string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, name+ext))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnrollUsageErrors(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "ikto.nk")
	base := []string{"enroll", "--nats-url", "nats://127.0.0.1:1", "--name", "a", "--advertise-address", "192.0.2.1", "--account-seed", seed}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"enroll"}, "enroll needs --name"},
		{[]string{"enroll", "--name", "a/b"}, `--name "a/b"`},
		{[]string{"enroll", "--name", "a"}, "enroll needs --advertise-address"},
		{[]string{"enroll", "--name", "a", "--advertise-address", "192.0.2.1"}, "enroll needs --account-seed"},
		{with("extra"), `unexpected argument "extra"`},
		{with("--advertise-address", "nope"), `--advertise-address "nope" is not an IP address`},
		{with("--advertise-address", "fd10::7"), "inside the mesh"},
		{with("--public-key", "AAAA"), `--public-key "AAAA" is not a WireGuard public key`},
		{with("--user-nkey", "ABCD"), `--user-nkey "ABCD" is not a NATS user public nkey`},
		{with("--expires", "-1h"), "--expires -1h0m0s"},
		{with("--expires", "soon"), "invalid argument"},
		{with("--mesh-cidr", "fd10::1/16"), "--mesh-cidr"},
		{with("--subnet-prefix", "8"), "--subnet-prefix 8"},
		{with("--wg-port", "0"), "--wg-port 0"},
		{with("--wg-dev-name", "a-very-long-interface"), "--wg-dev-name"},
		{with("--host-dir", "etc/ikto"), "--host-dir"},
		{with("--private-key-path", "wg.key"), "--private-key-path"},
		{[]string{"init-bucket", "--nats-url", "nats://127.0.0.1:1", "--replicas", "0"}, "--replicas 0"},
		{[]string{"revoke-user"}, "revoke-user takes one user"},
		{[]string{"revoke-user", "UABC", "--operator-seed", seed}, "--operator-seed and --account-jwt go together"},
		{[]string{"revoke-user", "/nonexistent.creds"}, "neither a NATS user public nkey"},
		{[]string{"evict", "fd10::1", "--operator-seed", seed, "--account-jwt", seed}, "give it with --user"},
		{[]string{"evict", "fd10::1", "--user", "UABC", "--system-creds", seed}, "--system-creds pushes a revocation"},
	} {
		code, _, stderr := exec(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("ikto-admin %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestEnrollWritesAScopedHost(t *testing.T) {
	f := newEnrollFixture(t)
	userURL := strings.Replace(f.url, "nats://", "nats://ops:s3cret@", 1)
	code, stdout, stderr := exec(t, "enroll", "--nats-url", userURL, "--name", "host-a", "--advertise-address", "192.0.2.10",
		"--account-seed", f.seed, "-o", f.dir, "--expires", "24h")
	if code != 0 {
		t.Fatalf("enroll: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, ext := range []string{".json", ".creds", ".key"} {
		if st, err := os.Stat(filepath.Join(f.dir, "host-a"+ext)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("host-a%s: %v, want mode 0600", ext, err)
		}
	}
	// The config is complete: it loads as the agent loads it.
	s, err := config.Load(filepath.Join(f.dir, "host-a.json"))
	if err != nil {
		t.Fatalf("the enrolled config does not load: %v", err)
	}
	uc, hasSeed, err := enroll.ReadCreds(f.read(t, "host-a", ".creds"))
	if err != nil || !hasSeed {
		t.Fatalf("host-a.creds: seed %v, %v", hasSeed, err)
	}
	want, err := enroll.Permissions(enroll.Host{Bucket: "ikto-mesh", Prefix: s.Prefix, InboxPrefix: enroll.InboxPrefix(uc.Subject)})
	if err != nil {
		t.Fatal(err)
	}
	accountKey, _ := f.account.PublicKey()
	got := []any{s.NATS.InboxPrefix, s.NATS.URLs, s.NATS.Creds, uc.Issuer, uc.Name, uc.Expires, []string(uc.Pub.Allow), []string(uc.Sub.Allow)}
	wantFields := []any{enroll.InboxPrefix(uc.Subject), []string{f.url}, filepath.Join(f.dir, "host-a.creds"), accountKey, "host-a", now.Add(24 * time.Hour).Unix(), want.Publish, want.Subscribe}
	if diff := cmp.Diff(wantFields, got); diff != "" {
		t.Errorf("enrolled host-a (-want +got):\n%s", diff)
	}
	if strings.Contains(string(f.read(t, "host-a", ".json")), "s3cret") {
		t.Error("host-a.json carries the operator's password")
	}
	if !strings.Contains(stdout, "enrolled host-a: prefix "+s.Prefix.String()) {
		t.Errorf("enroll said:\n%s", stdout)
	}
}

func TestEnrollHostKeepsItsPrivateKeys(t *testing.T) {
	f := newEnrollFixture(t)
	pub := testKey(t, 7).String()
	user, _ := nkeys.CreateUser()
	userKey, _ := user.PublicKey()
	seed, _ := user.Seed()
	code, stdout, stderr := f.enroll(t, "host-b", "--public-key", pub, "--user-nkey", userKey, "--private-key-path", "/etc/ikto/wg.key")
	if code != 0 {
		t.Fatalf("enroll: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "host-b.key")); !os.IsNotExist(err) {
		t.Errorf("host-b.key: %v, want none", err)
	}
	creds := f.read(t, "host-b", ".creds")
	uc, hasSeed, err := enroll.ReadCreds(creds)
	if err != nil || hasSeed || uc.Subject != userKey || bytes.Contains(creds, seed) {
		t.Errorf("host-b.creds: user %v, seed %v (%v); want %s and no seed", uc, hasSeed, err, userKey)
	}
	var c config.Config
	if err := json.Unmarshal(f.read(t, "host-b", ".json"), &c); err != nil || c.PrivateKeyPath != "/etc/ikto/wg.key" {
		t.Errorf("host-b.json private_key_path %q (%v)", c.PrivateKeyPath, err)
	}
	if !strings.Contains(stdout, "append the seed of user "+userKey) {
		t.Errorf("enroll did not say how to complete the creds:\n%s", stdout)
	}
}

func TestReEnrollShowsChangesAndNeedsForce(t *testing.T) {
	f := newEnrollFixture(t)
	if code, stdout, stderr := f.enroll(t, "host-a"); code != 0 {
		t.Fatalf("enroll: exit %d\n%s%s", code, stdout, stderr)
	}
	before := map[string][]byte{}
	for _, ext := range []string{".json", ".creds", ".key"} {
		before[ext] = f.read(t, "host-a", ext)
	}
	code, stdout, stderr := f.enroll(t, "host-a", "--advertise-address", "192.0.2.77")
	if code != 1 || !strings.Contains(stderr, "--force") || !strings.Contains(stdout, `advertise_address: "192.0.2.10" -> "192.0.2.77"`) ||
		!strings.Contains(stdout, "NATS user: U") || strings.Contains(stdout, "private_address") {
		t.Errorf("re-enroll without --force: exit %d\n%s%s", code, stdout, stderr)
	}
	for ext, b := range before {
		if !bytes.Equal(b, f.read(t, "host-a", ext)) {
			t.Errorf("host-a%s changed without --force", ext)
		}
	}
	if code, stdout, stderr = f.enroll(t, "host-a", "--advertise-address", "192.0.2.77", "--force"); code != 0 {
		t.Fatalf("re-enroll --force: exit %d\n%s%s", code, stdout, stderr)
	}
	var oldCfg, newCfg config.Config
	_ = json.Unmarshal(before[".json"], &oldCfg)
	_ = json.Unmarshal(f.read(t, "host-a", ".json"), &newCfg)
	if newCfg.PrivateAddress != oldCfg.PrivateAddress || newCfg.AdvertiseAddress != "192.0.2.77" ||
		!bytes.Equal(before[".key"], f.read(t, "host-a", ".key")) || bytes.Equal(before[".creds"], f.read(t, "host-a", ".creds")) {
		t.Errorf("re-enroll --force: want the prefix and key kept, a new user and the new address; got %+v", newCfg)
	}
}

// TestEnrollDrawsAFreePrefix: a claimed prefix is skipped, and an earlier
// enrollment's prefix that another host took meanwhile is given up.
func TestEnrollDrawsAFreePrefix(t *testing.T) {
	f := newEnrollFixture(t)
	kv := openBucket(t, f.js)
	put(t, kv, record(t, "other", "10.0.0.0/31", 9, "192.0.2.99", 51820))
	mesh := []string{"--mesh-cidr", "10.0.0.0/30", "--subnet-prefix", "31"}
	if code, stdout, stderr := f.enroll(t, "host-a", mesh...); code != 0 || !strings.Contains(stdout, "prefix 10.0.0.2/31") {
		t.Fatalf("enroll in a mesh with one free /31: exit %d\n%s%s", code, stdout, stderr)
	}
	put(t, kv, record(t, "thief", "10.0.0.2/31", 8, "192.0.2.98", 51820))
	code, stdout, stderr := f.enroll(t, "host-a", append(mesh, "--force")...)
	if code != 1 || !strings.Contains(stderr, "mesh looks full") {
		t.Errorf("re-enroll with every prefix taken: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("10.0.0.0/31"))); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = f.enroll(t, "host-a", append(mesh, "--force")...)
	if code != 0 || !strings.Contains(stdout, `private_address: "10.0.0.2" -> "10.0.0.0"`) {
		t.Errorf("re-enroll after the prefix was taken: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestEnrollNeedsTheBucket(t *testing.T) {
	url, _ := startNATS(t)
	account, _ := nkeys.CreateAccount()
	seed, _ := account.Seed()
	path := filepath.Join(t.TempDir(), "ikto.nk")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := exec(t, "enroll", "--nats-url", url, "--name", "a", "--advertise-address", "192.0.2.1", "--account-seed", path, "-o", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "init-bucket") {
		t.Errorf("enroll without a bucket: exit %d, %q; want 1 naming init-bucket", code, stderr)
	}
	op, _ := nkeys.CreateOperator()
	opSeed, _ := op.Seed()
	if err := os.WriteFile(path, opSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = exec(t, "enroll", "--nats-url", url, "--name", "a", "--advertise-address", "192.0.2.1", "--account-seed", path, "-o", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "--account-seed "+path) || !strings.Contains(stderr, "an account (SA…)") {
		t.Errorf("enroll with an operator seed: exit %d, %q", code, stderr)
	}
}

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func seedOf(t *testing.T, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(nil), s...), '\n')
}

func TestRevokeUserSaysHowWithoutTheOperatorKey(t *testing.T) {
	f := newEnrollFixture(t)
	if code, stdout, stderr := f.enroll(t, "host-a"); code != 0 {
		t.Fatalf("enroll: exit %d\n%s%s", code, stdout, stderr)
	}
	uc, _, _ := enroll.ReadCreds(f.read(t, "host-a", ".creds"))
	accountKey, _ := f.account.PublicKey()
	code, stdout, stderr := exec(t, "revoke-user", filepath.Join(f.dir, "host-a.creds"))
	want := "nsc revocations add-user --account " + accountKey + " --user-public-key " + uc.Subject
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "ikto-admin revoke-user "+uc.Subject) {
		t.Errorf("revoke-user without keys: exit %d, want %q\n%s%s", code, want, stdout, stderr)
	}
}

func TestRevokeUserSignsTheAccountJWT(t *testing.T) {
	auth, err := enroll.NewAuthority("test")
	if err != nil {
		t.Fatal(err)
	}
	accountJWT := writeFile(t, "ikto.jwt", []byte(auth.AccountJWT+"\n"), 0o640)
	operatorSeed := writeFile(t, "operator.nk", seedOf(t, auth.Operator), 0o600)
	accountSeed := writeFile(t, "ikto.nk", seedOf(t, auth.Account), 0o600)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := user.PublicKey()

	// The account's own key cannot sign its JWT: the file stays as it was.
	code, _, stderr := exec(t, "revoke-user", userKey, "--operator-seed", accountSeed, "--account-jwt", accountJWT)
	if code != 1 || !strings.Contains(stderr, "an operator (SO…)") {
		t.Errorf("revoke-user signed with the account seed: exit %d, %q", code, stderr)
	}
	code, stdout, stderr := exec(t, "revoke-user", userKey, "--operator-seed", operatorSeed, "--account-jwt", accountJWT)
	if code != 0 || !strings.Contains(stdout, "revoked NATS user "+userKey) || !strings.Contains(stdout, "push it") {
		t.Fatalf("revoke-user: exit %d\n%s%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(accountJWT)
	if err != nil {
		t.Fatal(err)
	}
	if revoked, err := enroll.Revoked(strings.TrimSpace(string(data)), userKey, now.Add(-time.Minute)); err != nil || !revoked {
		t.Errorf("account JWT after revoke-user: revoked %v (%v)", revoked, err)
	}
	if st, _ := os.Stat(accountJWT); st.Mode().Perm() != 0o640 {
		t.Errorf("account JWT mode %04o, want 0640 kept", st.Mode().Perm())
	}
}

// TestEvictChecksTheUser: evict --user refuses a user that is not the
// evicted host's (another host's, or an unrestricted one) and changes
// nothing; with the host's own it evicts and says how to revoke the user.
func TestEvictChecksTheUser(t *testing.T) {
	f := newEnrollFixture(t)
	for _, name := range []string{"host-a", "host-b"} {
		if code, stdout, stderr := f.enroll(t, name); code != 0 {
			t.Fatalf("enroll %s: exit %d\n%s%s", name, code, stdout, stderr)
		}
	}
	var b config.Config
	if err := json.Unmarshal(f.read(t, "host-b", ".json"), &b); err != nil {
		t.Fatal(err)
	}
	prefix := netip.PrefixFrom(netip.MustParseAddr(b.PrivateAddress), b.SubnetPrefix)
	kv := openBucket(t, f.js)
	put(t, kv, record(t, "host-b", prefix.String(), 3, "192.0.2.10", 51820))
	admin, err := enroll.UserCreds(f.account, "admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, want string }{
		{filepath.Join(f.dir, "host-a.creds"), "is not the user of host-b"},
		{writeFile(t, "admin.creds", admin, 0o600), "may publish anywhere"},
	} {
		code, stdout, stderr := exec(t, "evict", b.PrivateAddress, "--nats-url", f.url, "--user", tc.user)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("evict --user %s: exit %d, want %q\n%s%s", tc.user, code, tc.want, stdout, stderr)
		}
	}
	if _, err := kv.Get(context.Background(), peer.Key(prefix)); err != nil {
		t.Fatalf("host-b's record after the refused evictions: %v", err)
	}
	code, stdout, stderr := exec(t, "evict", b.PrivateAddress, "--nats-url", f.url, "--user", filepath.Join(f.dir, "host-b.creds"))
	if code != 0 || !strings.Contains(stdout, "evicted host-b") || !strings.Contains(stdout, "nsc revocations add-user") {
		t.Errorf("evict --user with host-b's creds: exit %d\n%s%s", code, stdout, stderr)
	}
}
