package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

// TestIncludeLine: the include path is relative to the directory of the
// configuration that includes it, as nats-server reads it, and quoted when
// it would not read as one word.
func TestIncludeLine(t *testing.T) {
	for _, tc := range []struct{ serverConfig, authConf, want string }{
		{"/etc/nats-server.conf", "/etc/nats/ikto/nats-auth.conf", "include nats/ikto/nats-auth.conf"},
		{"/etc/nats/nats-server.conf", "/etc/nats/ikto/nats-auth.conf", "include ikto/nats-auth.conf"},
		{"/etc/nats/nats-server.conf", "/etc/nats/nats-auth.conf", "include nats-auth.conf"},
		{"/srv/nats/server.conf", "/etc/nats/ikto/nats-auth.conf", "include ../../etc/nats/ikto/nats-auth.conf"},
		{"/etc/nats-server.conf", "/etc/my nats/nats-auth.conf", `include "my nats/nats-auth.conf"`},
	} {
		got, err := includeLine(tc.serverConfig, tc.authConf)
		if err != nil || got != tc.want {
			t.Errorf("includeLine(%s, %s) = %q, %v; want %q", tc.serverConfig, tc.authConf, got, err, tc.want)
		}
	}
}

// TestInitOperatorSizesTheAccount: --max-hosts reaches the account JWT and
// the printed summary; nonsense is a usage error.
func TestInitOperatorSizesTheAccount(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ikto")
	code, stdout, stderr := exec(t, "init-operator", "-o", dir, "--max-hosts", "10",
		"--server-config", filepath.Join(filepath.Dir(dir), "nats-server.conf"), "--resolver-dir", "/var/lib/nats/jwt")
	if code != 0 {
		t.Fatalf("init-operator: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"with --max-hosts 10, 84 connections, 4 streams, 84 consumers per stream, 2560 KiB of disk and no memory streams",
		"\n       include ikto/nats-auth.conf\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("init-operator printed no %q:\n%s", want, stdout)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "ikto.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	// The limits in the JWT's claims, compared as JSON with those of
	// the sizing.
	parts := strings.Split(strings.TrimSpace(string(data)), ".")
	if len(parts) != 3 {
		t.Fatalf("ikto.jwt is no JWT: %q", data)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Nats struct {
			Limits map[string]any `json:"limits"`
		} `json:"nats"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	limits, err := enroll.Sizing{MaxHosts: 10}.AccountLimits()
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if b, err := json.Marshal(limits); err != nil || json.Unmarshal(b, &want) != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, claims.Nats.Limits); diff != "" {
		t.Errorf("ikto.jwt limits (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"0", "-3"} {
		if code, _, stderr := exec(t, "init-operator", "-o", t.TempDir(), "--max-hosts", bad); code != 2 || !strings.Contains(stderr, "--max-hosts") {
			t.Errorf("--max-hosts %s: exit %d, %q; want 2 naming the flag", bad, code, stderr)
		}
	}
}

// TestInitOperatorMakesAWorkingServerConfig starts the embedded nats-server
// with the nats-auth.conf init-operator wrote: its admin.creds can make the
// buckets and enroll a host. A second run replaces nothing.
func TestInitOperatorMakesAWorkingServerConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	code, stdout, stderr := exec(t, "init-operator", "-o", dir, "--resolver-dir", filepath.Join(t.TempDir(), "jwt"))
	if code != 0 {
		t.Fatalf("init-operator: exit %d\n%s%s", code, stdout, stderr)
	}
	for name, mode := range map[string]os.FileMode{"operator.nk": 0o600, "ikto.nk": 0o600, "sys.creds": 0o600, "admin.creds": 0o600, "ikto.jwt": 0o644, "nats-auth.conf": 0o644} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, want mode %04o", name, err, mode)
		}
	}
	conf, err := os.ReadFile(filepath.Join(dir, "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.StartWith(t, natsserver.Options{Config: string(conf)})
	admin := filepath.Join(dir, "admin.creds")
	if code, stdout, stderr := exec(t, "init-bucket", "--nats-url", s.URL(), "--nats-creds", admin); code != 0 {
		t.Fatalf("init-bucket with admin.creds: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = exec(t, "enroll", "--nats-url", s.URL(), "--nats-creds", admin, "--name", "host-a",
		"--advertise-address", "192.0.2.10", "--account-seed", filepath.Join(dir, "ikto.nk"), "-o", t.TempDir())
	if code != 0 {
		t.Fatalf("enroll with init-operator's files: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := exec(t, "init-operator", "-o", dir); code != 1 || !strings.Contains(stderr, "never replaces") {
		t.Errorf("init-operator again: exit %d, %q", code, stderr)
	}
}
