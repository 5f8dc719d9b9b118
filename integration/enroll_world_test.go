package integration_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

// authServer is a nats-server in operator (JWT) mode: embedded, or a
// binary run as a process.
type authServer interface {
	URL() string
	Violations() []string
}

// enrollWorld is a mesh whose NATS server trusts a fresh operator, with the
// operator's files (seeds, JWTs, creds) in dir and enrollments in out.
type enrollWorld struct {
	m    *mesh
	srv  authServer
	auth *enroll.Authority
	// sizing is what the mesh account's limits were derived from.
	sizing enroll.Sizing
	dir    string
	out    string
	// files the operator keeps: seeds and JWTs, and creds of an
	// unrestricted user (admin, also the open hosts' shared user) and of a
	// system account user (to push account updates).
	accountSeed, operatorSeed, accountJWT, adminCreds, systemCreds string
}

// newEnrollWorld makes the world on a server of the matrix (servers). The mesh account's
// limits follow sizing (init-operator's --max-hosts), enroll's default
// without it.
func newEnrollWorld(t *testing.T, kind string, sizing ...enroll.Sizing) *enrollWorld {
	t.Helper()
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	n := harnesstest.Network(t)
	size := enroll.DefaultSizing()
	if len(sizing) > 0 {
		size = sizing[0]
	}
	auth, err := enroll.NewSizedAuthority("ikto-test", size)
	if err != nil {
		t.Fatal(err)
	}
	w := &enrollWorld{
		m:    &mesh{t: t, net: n, bins: bins, agents: map[string]*harness.Agent{}},
		auth: auth, sizing: size, dir: t.TempDir(), out: t.TempDir(),
	}
	w.writeOperatorFiles(t)
	// A full resolver accepts pushed account updates (revocations).
	conf := auth.ServerConfig(enroll.Resolver{Dir: t.TempDir()})
	switch kind {
	case serverEmbedded:
		s, err := harness.StartConfNATS(natsserver.Options{Host: n.Gateway, StoreDir: t.TempDir()}, conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		w.srv = s
	case serverDebian:
		w.srv = harnesstest.DebianNATS(t, n.Gateway, t.TempDir(), conf)
	default:
		t.Fatalf("unknown server kind %q", kind)
	}
	return w
}

// writeOperatorFiles writes what an operator keeps after setting up NATS
// (nsc, or enroll.NewAuthority): both seeds, the account JWT, and creds of
// an unrestricted account user and of a system account user.
func (w *enrollWorld) writeOperatorFiles(t *testing.T) {
	t.Helper()
	write := func(name string, data []byte) string {
		return harnesstest.WriteFile(t, filepath.Join(w.dir, name), data, 0o600)
	}
	seed := func(kp nkeys.KeyPair) []byte {
		s, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return append(s, '\n')
	}
	creds := func(account nkeys.KeyPair, name string) []byte {
		c, err := enroll.UserCreds(account, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	w.accountSeed = write("ikto.nk", seed(w.auth.Account))
	w.operatorSeed = write("operator.nk", seed(w.auth.Operator))
	w.accountJWT = write("ikto.jwt", []byte(w.auth.AccountJWT+"\n"))
	w.adminCreds = write("admin.creds", creds(w.auth.Account, "admin"))
	w.systemCreds = write("sys.creds", creds(w.auth.System, "sys"))
}

// admin runs ikto-admin as the operator's unrestricted user.
func (w *enrollWorld) admin(args ...string) (int, string, string) {
	w.m.t.Helper()
	return runAdmin(w.m.t, w.m.bins, append([]string{"--nats-url", w.srv.URL(), "--nats-creds", w.adminCreds}, args...)...)
}

// enrollHost runs ikto-admin enroll for h with extra flags, and returns the
// config it wrote, made ready for the harness (userspace device, short
// resync), with h's address and key updated to the enrollment's.
func (w *enrollWorld) enrollHost(h *harness.Host, extra ...string) config.Config {
	t := w.m.t
	t.Helper()
	args := append([]string{"enroll", "--name", h.Name, "--advertise-address", h.Addr.String(),
		"--account-seed", w.accountSeed, "-o", w.out, "--mesh-cidr", w.m.net.Mesh.String(),
		"--wg-dev-name", h.DevName}, extra...)
	code, stdout, stderr := w.admin(args...)
	if code != 0 {
		t.Fatalf("enroll %s exited %d:\n%s%s", h.Name, code, stdout, stderr)
	}
	t.Logf("enroll %s:\n%s", h.Name, stdout)
	cfg := w.readConfig(h.Name)
	cfg.WGBackend, cfg.ResyncInterval = "userspace", "2s"
	h.PrivateAddress = netip.MustParseAddr(cfg.PrivateAddress)
	if cfg.PrivateKeyPath != h.KeyPath {
		k, err := config.LoadPrivateKey(cfg.PrivateKeyPath)
		if err != nil {
			t.Fatal(err)
		}
		h.KeyPath, h.PublicKey = cfg.PrivateKeyPath, k.PublicKey()
	}
	return cfg
}

func (w *enrollWorld) readConfig(name string) config.Config {
	t := w.m.t
	t.Helper()
	data, err := os.ReadFile(filepath.Join(w.out, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var c config.Config
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// openHostConfig is h's config with the shared credentials every host of an
// ikto 0.3.0 mesh has (here the operator's unrestricted user).
func (w *enrollWorld) openHostConfig(h *harness.Host) config.Config {
	c := h.Config(w.srv.URL(), bucketName)
	c.NATSCreds = w.adminCreds
	return c
}

// waitLog waits until the agent on h has logged want at least times times.
func (w *enrollWorld) waitLog(h *harness.Host, want string, times int) {
	w.m.t.Helper()
	what := fmt.Sprintf("the agent on %s to log %q %d times", h.Name, want, times)
	testkit.Eventually(w.m.t, convergeTimeout, what, func() error {
		a := w.m.agents[h.Name]
		got := strings.Count(a.Logs(), want)
		if got >= times {
			return nil
		}
		if code, ok := a.ExitCode(); ok {
			return testkit.Permanent(fmt.Errorf("it exited %d:\n%s", code, a.LogTail(20)))
		}
		return fmt.Errorf("logged %d times so far:\n%s", got, a.LogTail(5))
	})
}
