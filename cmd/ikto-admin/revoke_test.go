package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

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
