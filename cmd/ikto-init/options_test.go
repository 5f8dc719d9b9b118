package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
	"github.com/ikto-mesh/ikto/pkg/natsctx/natsctxtest"
)

func init() { natsctxtest.Isolate("ikto-init", natsctx.Vars) }

func TestHostFlags(t *testing.T) {
	c, r := mustRun(t, nil, "--state-dir", "/var/lib/ikto", "--wg-backend", "kernel", "--persistent-keepalive", "25",
		"--nats-tls-ca", "/etc/ikto/ca.pem", "--nats-tls-cert", "/etc/ikto/host.pem", "--nats-tls-key", "/etc/ikto/host.key")
	want := config.Config{
		StateDir: "/var/lib/ikto", WGBackend: "kernel", PersistentKeepalive: 25,
		NATSTLSCA: "/etc/ikto/ca.pem", NATSTLSCert: "/etc/ikto/host.pem", NATSTLSKey: "/etc/ikto/host.key",
	}
	got := config.Config{
		StateDir: c.StateDir, WGBackend: c.WGBackend, PersistentKeepalive: c.PersistentKeepalive,
		NATSTLSCA: c.NATSTLSCA, NATSTLSCert: c.NATSTLSCert, NATSTLSKey: c.NATSTLSKey,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("printed fields (-want +got):\n%s", diff)
	}
	if _, err := config.Parse(strings.NewReader(r.stdout)); err != nil {
		t.Errorf("config.Parse(output): %v", err)
	}

	for _, args := range [][]string{
		{"--state-dir", "var/lib/ikto"},
		{"--wg-backend", "fake"},
		{"--wg-backend", "wireguard-go"},
		{"--persistent-keepalive", "-1"},
		{"--persistent-keepalive", "65536"},
		{"--nats-tls-cert", "/etc/ikto/host.pem"},
		{"--nats-tls-key", "/etc/ikto/host.key"},
	} {
		r := runInit(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, args[0]) || r.stdout != "" {
			t.Errorf("%q: exit %d, stderr %q; want 2 naming %s", args, r.code, r.stderr, args[0])
		}
	}
}

// With the server named by NATS_URL or a nats context — a password coming
// from the context or the environment, never the command line — ikto-init
// skips claimed prefixes and prints the servers, but no secret and none of
// the operator's files.
func TestNATSFromEnvironmentAndContext(t *testing.T) {
	url := natstest.StartWith(t, natsserver.Options{Config: `authorization { user: ops, password: s3cret }`}).URL()
	_, js := natstest.Connect(t, strings.Replace(url, "nats://", "nats://ops:s3cret@", 1))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "ikto-mesh"})
	if err != nil {
		t.Fatal(err)
	}
	natsctxtest.UseContexts(t, "ops", map[string]string{
		"ops":     `{"url": "` + url + `", "user": "ops", "password": "s3cret", "ca": ""}`,
		"nopass":  `{"url": "` + url + `", "user": "ops"}`,
		"unknown": `{"url": "` + url + `", "nkey": "/home/ops/ops.nk"}`,
	})

	for i, tc := range []struct {
		what string
		env  map[string]string
		args []string
	}{
		{what: "the selected context"},
		{what: "NATS_URL with NATS_USER and NATS_PASSWORD", env: map[string]string{"NATS_URL": url, "NATS_USER": "ops", "NATS_PASSWORD": "s3cret", "NATS_CONTEXT": "nopass"}},
		{what: "--context, the password from the environment", env: map[string]string{"NATS_PASSWORD": "s3cret"}, args: []string{"--context", "nopass"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			d := draws(t, byte(10+i), "fd10::/16", 48, 2)
			claim(t, kv, d[0])
			c, r := mustRun(t, seeded(byte(10+i)), tc.args...)
			if got := checkPrivateAddress(t, c); got != d[1] {
				t.Errorf("drew %s, want %s: the first draw is claimed (stderr %q)", got, d[1], r.stderr)
			}
			if r.stderr != "" {
				t.Errorf("stderr %q, want nothing", r.stderr)
			}
			if c.NATSURL != url || c.NATSCreds != "" || c.NATSTLSCA != "" || strings.Contains(r.stdout, "s3cret") {
				t.Errorf("printed nats_url %q, nats_creds %q, nats_tls_ca %q; want the server only:\n%s", c.NATSURL, c.NATSCreds, c.NATSTLSCA, r.stdout)
			}
		})
	}

	t.Run("--nats-url wins and is printed", func(t *testing.T) {
		other := natstest.Start(t).URL()
		c, _ := mustRun(t, nil, "--nats-url", other)
		if c.NATSURL != other {
			t.Errorf("nats_url %q, want %q", c.NATSURL, other)
		}
	})

	t.Run("the operator's creds stay out of the config", func(t *testing.T) {
		t.Setenv("NATS_URL", url)
		t.Setenv("NATS_CREDS", "/home/ops/.config/nats/ops.creds")
		r := runInit(t, nil)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		c := decodeStrict(t, []byte(r.stdout))
		if c.NATSURL != url || c.NATSCreds != "" {
			t.Errorf("printed nats_url %q, nats_creds %q; want %q and none", c.NATSURL, c.NATSCreds, url)
		}
		checkWarning(t, r.stderr, url, "ops.creds") // used for the look-up, and missing
	})

	t.Run("a wrong password is a warning", func(t *testing.T) {
		t.Setenv("NATS_PASSWORD", "wrong")
		r := runInit(t, nil, "--context", "nopass")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		checkWarning(t, r.stderr, url, "Authorization Violation")
	})

	t.Run("a context ikto cannot honour is an error", func(t *testing.T) {
		r := runInit(t, nil, "--context", "unknown")
		if r.code != 1 || !strings.Contains(r.stderr, `"nkey"`) || r.stdout != "" {
			t.Errorf("exit %d, stderr %q; want 1 naming nkey", r.code, r.stderr)
		}
	})
}
