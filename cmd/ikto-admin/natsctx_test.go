package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
	"github.com/ikto-mesh/ikto/pkg/natsctx/natsctxtest"
)

// deadURL is a NATS URL nobody answers on.
func init() { natsctxtest.Isolate("ikto-admin", natsctx.Vars) }

func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "nats://" + l.Addr().String()
}

// meshWith starts a server whose bucket holds one host named name.
func meshWith(t *testing.T, name string) string {
	t.Helper()
	url, js := startNATS(t)
	put(t, openBucket(t, js), record(t, name, "fd10:1::/48", 1, "198.18.0.2", 51820))
	return url
}

// listedNames runs list -o json with args and returns the hosts' names.
func listedNames(t *testing.T, args ...string) []string {
	t.Helper()
	code, stdout, stderr := exec(t, append([]string{"list", "-o", "json", "--timeout", "2s"}, args...)...)
	if code != 0 {
		t.Fatalf("list %q: exit %d: %s", args, code, stderr)
	}
	var rows []struct{ Name string }
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("list %q: %v\n%s", args, err, stdout)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	return names
}

// list finds the mesh through NATS_URL, the selected nats context,
// NATS_CONTEXT and --context, in the nats CLI's order of precedence.
func TestListHonoursEnvironmentAndContexts(t *testing.T) {
	env, selected, named, flagged := meshWith(t, "env"), meshWith(t, "selected"), meshWith(t, "named"), meshWith(t, "flagged")
	dead := deadURL(t)
	natsctxtest.UseContexts(t, "sel", map[string]string{
		"sel":   `{"url": "` + selected + `", "description": "selected with nats context select"}`,
		"named": `{"url": "` + named + `"}`,
		"flag":  `{"url": "` + flagged + `"}`,
	})
	hostConfig := filepath.Join(t.TempDir(), "ikto.json")
	if err := os.WriteFile(hostConfig, []byte(`{"nats_url": "`+named+`", "nats_kv": "ikto-mesh"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		what string
		env  map[string]string
		args []string
		want string
	}{
		{what: "the selected context", want: "selected"},
		{what: "NATS_CONTEXT over the selected one", env: map[string]string{"NATS_CONTEXT": "named"}, want: "named"},
		{what: "--context over NATS_CONTEXT", env: map[string]string{"NATS_CONTEXT": "named"}, args: []string{"--context", "flag"}, want: "flagged"},
		{what: "NATS_URL over the context", env: map[string]string{"NATS_URL": env}, want: "env"},
		{what: "-c over NATS_URL", env: map[string]string{"NATS_URL": dead}, args: []string{"-c", hostConfig}, want: "named"},
		{what: "--nats-url over everything", env: map[string]string{"NATS_URL": dead}, args: []string{"-c", hostConfig, "--context", "flag", "--nats-url", env}, want: "env"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := listedNames(t, tc.args...); len(got) != 1 || got[0] != tc.want {
				t.Errorf("listed %q, want the mesh of %q", got, tc.want)
			}
		})
	}
}

func TestListRefusesAContextItCannotHonour(t *testing.T) {
	natsctxtest.UseContexts(t, "", map[string]string{"nk": `{"url": "nats://127.0.0.1:4222", "nkey": "/home/ops/ops.nk"}`})
	for _, args := range [][]string{{"--context", "nk"}, {"--context", "missing"}} {
		code, _, stderr := exec(t, append([]string{"list"}, args...)...)
		if code != 1 || !strings.Contains(stderr, "nats context") {
			t.Errorf("list %q: exit %d, stderr %q; want 1 naming the context", args, code, stderr)
		}
	}
	code, _, stderr := exec(t, "list", "--context", "nk")
	if !strings.Contains(stderr, `"nkey"`) {
		t.Errorf("list --context nk: exit %d, stderr %q; want the unsupported field named", code, stderr)
	}
}

// A password from a context or the environment ends up in the settings
// ikto-admin dials with, and authenticates against a real server.
func TestNATSSettingsCarryThePassword(t *testing.T) {
	s := natstest.StartWith(t, natsserver.Options{Config: `authorization { user: ops, password: s3cret }`})
	natsctxtest.UseContexts(t, "ops", map[string]string{"ops": `{"url": "` + s.URL() + `", "user": "ops"}`})
	t.Setenv("NATS_PASSWORD", "s3cret")

	a := &app{stdout: new(strings.Builder), stderr: new(strings.Builder), now: time.Now}
	root := a.rootCommand()
	cmd, args, err := root.Find([]string{"list"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if err := a.loadConfig(cmd); err != nil {
		t.Fatal(err)
	}
	settings, err := a.natsSettings()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bucket.Dial(settings, bucket.Client{Name: "ikto-admin-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("dial with the resolved settings: %v", err)
	}
	conn.Close()
}

// With openMesh dialling natsSettings, list authenticates with a password
// that only a context and the environment hold.
func TestListWithPasswordFromContextAndEnvironment(t *testing.T) {
	s := natstest.StartWith(t, natsserver.Options{Config: `authorization { user: ops, password: s3cret }`})
	_, js := natstest.Connect(t, strings.Replace(s.URL(), "nats://", "nats://ops:s3cret@", 1))
	put(t, openBucket(t, js), record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820))
	natsctxtest.UseContexts(t, "ops", map[string]string{"ops": `{"url": "` + s.URL() + `", "user": "ops"}`})
	t.Setenv("NATS_PASSWORD", "s3cret")
	if got := listedNames(t); len(got) != 1 || got[0] != "alpha" {
		t.Errorf("listed %q, want alpha", got)
	}
	t.Setenv("NATS_PASSWORD", "wrong")
	if code, _, stderr := exec(t, "list", "--timeout", "2s"); code != 1 || !strings.Contains(stderr, "Authorization Violation") {
		t.Errorf("list with a wrong password: exit %d, %q", code, stderr)
	}
}
