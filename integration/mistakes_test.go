package integration_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
)

// TestOperatorMistakesNamed makes, against Debian's nats-server 2.9.10 (the
// oldest the docs promise), the control-plane mistakes a new operator makes,
// and checks each binary's answer names the cause and the fix: credentials
// of an account without JetStream, a wrong password, a port nothing listens
// on. (A host name that does not resolve is told apart in pkg/bucket's
// tests: whether a test machine's resolver answers at all varies.)
func TestOperatorMistakesNamed(t *testing.T) {
	n := harnesstest.Network(t)
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.InitBinary, harness.AdminBinary)
	srv := harnesstest.DebianNATS(t, n.Gateway, t.TempDir(), `
accounts {
  MESH: { jetstream: enabled, users: [{user: mesh, password: meshpw}] }
  OTHER: { users: [{user: other, password: otherpw}] }
}`)
	addr := srv.Addr.String()
	h := harnesstest.AddHost(t, n, "alpha")
	run := func(bin string, args ...string) (string, error) {
		path, err := bins.Path(bin)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// stdout and stderr together: a warning of a command that succeeds
		// goes to stderr.
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace, path}, args...)...).CombinedOutput()
		return string(out), err
	}
	expect := func(t *testing.T, what, out string, err error, failed bool, words ...string) {
		t.Helper()
		if failed != (err != nil) {
			t.Errorf("%s: failed = %v (%v), want %v:\n%s", what, err != nil, err, failed, out)
		}
		for _, w := range words {
			if !strings.Contains(out, w) {
				t.Errorf("%s does not say %q:\n%s", what, w, out)
			}
		}
	}
	port, err := natsserver.FreePort(n.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	freePort := fmt.Sprintf("nats://%s:%d", n.Gateway, port)

	t.Run("an account without JetStream", func(t *testing.T) {
		url := "nats://other:otherpw@" + addr
		noJS := []string{"no JetStream answers for these credentials", "enable JetStream on the NATS server", "credentials of an account that has it"}
		out, err := run(harness.AdminBinary, "list", "--nats-url", url)
		expect(t, "ikto-admin list", out, err, true, noJS...)
		out, err = run(harness.InitBinary, "--advertise-address", h.Addr.String(), "--private-key-path", filepath.Join(h.Dir, "init.key"), "--nats-url", url)
		expect(t, "ikto-init", out, err, false, append(noJS, "private_address was not checked")...)
		cfg := h.Config(url, bucketName)
		a := harnesstest.StartAgent(t, bins, h, cfg)
		testkit.Eventually(t, 30*time.Second, "the agent to name the missing JetStream", func() error {
			if logs := a.Logs(); !strings.Contains(logs, noJS[1]) {
				return fmt.Errorf("not in its log yet:\n%s", a.LogTail(10))
			}
			return nil
		})
		if err := a.Stop(5 * time.Second); err != nil {
			t.Error(err)
		}
		// The account that has JetStream holds no bucket: nothing was written.
		out, err = run(harness.AdminBinary, "list", "--nats-url", "nats://mesh:meshpw@"+addr)
		expect(t, "ikto-admin list on the mesh account", out, err, true, "does not exist")
	})
	t.Run("a wrong password", func(t *testing.T) {
		out, err := run(harness.AdminBinary, "list", "--nats-url", "nats://mesh:wrong@"+addr)
		expect(t, "ikto-admin list", out, err, true, "uthorization", "check the user and password in nats_url")
	})
	t.Run("a port nothing listens on", func(t *testing.T) {
		out, err := run(harness.AdminBinary, "list", "--nats-url", freePort)
		expect(t, "ikto-admin list", out, err, true, "connection refused", "nothing listens there", "is nats-server running")
		out, err = run(harness.InitBinary, "--advertise-address", h.Addr.String(), "--private-key-path", filepath.Join(h.Dir, "init.key"), "--nats-url", freePort)
		expect(t, "ikto-init", out, err, false, "connection refused", "nothing listens there")
		cfg := h.Config(freePort, bucketName)
		a := harnesstest.StartAgent(t, bins, h, cfg)
		testkit.Eventually(t, 30*time.Second, "ikto-admin status to show the URL and the refusal", func() error {
			out, err := run(harness.AdminBinary, "status", "-s", a.SocketPath)
			if err == nil {
				return testkit.Permanent(fmt.Errorf("status exits 0 with no NATS:\n%s", out))
			}
			for _, w := range []string{freePort, "connection refused", "nothing listens there"} {
				if !strings.Contains(out, w) {
					return fmt.Errorf("status does not say %q yet:\n%s", w, out)
				}
			}
			return nil
		})
	})
}
