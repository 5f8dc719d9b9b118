package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// badConfigTimeout bounds one agent run on a broken config: it must exit at
// once, before it would even look for a NATS server.
const badConfigTimeout = 20 * time.Second

// nobody is the unprivileged user the unreadable-file cases run the agent as
// (root reads every file).
const nobody = 65534

// badConfigCase is one broken configuration: a change to a good config (or
// raw file content), and the words stderr must contain.
type badConfigCase struct {
	name  string
	edit  func(m map[string]any, f *badConfigFiles)
	raw   *string // file content instead of the edited config
	asNob bool    // run the agent as nobody
	words []string
}

// badConfigFiles are the files the cases point fields at.
type badConfigFiles struct {
	dir, key, nobodysKey, worldKey, garbageKey, creds, garbageCreds string
}

func badConfigCases() []badConfigCase {
	set := func(k string, v any) func(map[string]any, *badConfigFiles) {
		return func(m map[string]any, _ *badConfigFiles) { m[k] = v }
	}
	del := func(k string) func(map[string]any, *badConfigFiles) {
		return func(m map[string]any, _ *badConfigFiles) { delete(m, k) }
	}
	raw := func(s string) *string { return &s }
	return []badConfigCase{
		{name: "not JSON", raw: raw("name = alpha\n"), words: []string{"ikto.json", "not valid JSON"}},
		{name: "empty file", raw: raw(""), words: []string{"ikto.json", "empty file", "ikto-init"}},
		{name: "unknown field", edit: set("wg_prot", 51820), words: []string{"wg_prot", "unknown field", "spelling"}},
		{name: "wrong type", edit: set("wg_port", "51820"), words: []string{"wg_port", "JSON int"}},
		{name: "missing private_address", edit: del("private_address"), words: []string{"private_address", "missing", "ikto-init"}},
		{name: "missing advertise_address", edit: del("advertise_address"), words: []string{"advertise_address", "missing", "underlay IP"}},
		{name: "missing private_key_path", edit: del("private_key_path"), words: []string{"private_key_path", "missing", "ikto-init --private-key-path"}},
		{name: "missing nats_url", edit: del("nats_url"), words: []string{"nats_url", "missing", "nats://"}},
		{name: "bad mesh_cidr", edit: set("mesh_cidr", "fd10::"), words: []string{"mesh_cidr", "not a CIDR prefix", "fd10::/16"}},
		{name: "mesh_cidr with host bits", edit: set("mesh_cidr", "fd10::1/16"), words: []string{"mesh_cidr", "host bits", "use fd10::/16"}},
		{name: "subnet_prefix not longer than the mesh", edit: set("subnet_prefix", 8), words: []string{"subnet_prefix", "longer than the mesh prefix"}},
		{name: "private_address outside the mesh", edit: set("private_address", "fc00:1::"), words: []string{"private_address", "outside mesh_cidr"}},
		{name: "private_address misaligned", edit: func(m map[string]any, _ *badConfigFiles) {
			m["private_address"] = strings.TrimSuffix(m["private_address"].(string), "::") + "::1"
		}, words: []string{"private_address", "not aligned to subnet_prefix /48", "use "}},
		{name: "advertise_address loopback", edit: set("advertise_address", "127.0.0.1"), words: []string{"advertise_address", "not a usable unicast"}},
		{name: "advertise_address inside the mesh", edit: func(m map[string]any, _ *badConfigFiles) {
			m["advertise_address"] = strings.TrimSuffix(m["private_address"].(string), "::") + "::1"
		}, words: []string{"advertise_address", "inside mesh_cidr", "underlay"}},
		{name: "wg_port out of range", edit: set("wg_port", 70000), words: []string{"wg_port", "70000", "1-65535"}},
		{name: "key file missing", edit: func(m map[string]any, f *badConfigFiles) {
			m["private_key_path"] = filepath.Join(f.dir, "gone.key")
		}, words: []string{"private_key_path", "gone.key", "does not exist", "ikto-init --private-key-path"}},
		{name: "key file world-readable", edit: func(m map[string]any, f *badConfigFiles) { m["private_key_path"] = f.worldKey },
			words: []string{"private_key_path", "world.key", "group or others", "chmod 600"}},
		{name: "key file unreadable", asNob: true, words: []string{"private_key_path", "private.key", "cannot be read", "chown"}},
		{name: "key file is a directory", edit: func(m map[string]any, f *badConfigFiles) { m["private_key_path"] = f.dir },
			words: []string{"private_key_path", "not a regular file", "directory"}},
		{name: "key file holds no key", edit: func(m map[string]any, f *badConfigFiles) { m["private_key_path"] = f.garbageKey },
			words: []string{"private_key_path", "garbage.key", "base64 WireGuard key"}},
		{name: "creds file missing", edit: func(m map[string]any, f *badConfigFiles) {
			m["nats_creds"] = filepath.Join(f.dir, "gone.creds")
		}, words: []string{"nats_creds", "gone.creds", "does not exist", "nsc generate creds"}},
		{name: "creds file unreadable", asNob: true, edit: func(m map[string]any, f *badConfigFiles) {
			m["private_key_path"] = f.nobodysKey // so that the creds file is what fails
			m["nats_creds"] = f.creds
		}, words: []string{"nats_creds", "nats.creds", "cannot be read", "chown"}},
		{name: "creds file garbage", edit: func(m map[string]any, f *badConfigFiles) { m["nats_creds"] = f.garbageCreds },
			words: []string{"nats_creds", "garbage.creds", "no user JWT", "nsc generate creds"}},
		{name: "unknown backend", edit: set("wg_backend", "wireguard"), words: []string{"wg_backend", "auto, kernel, userspace"}},
	}
}

// TestBadConfiguration runs the real agent, inside a host's namespace, on
// each broken configuration: it must exit 1 at once and say on stderr which
// field or file is wrong and how to fix it.
func TestBadConfiguration(t *testing.T) {
	bins := harnesstest.Binaries(t)
	n := harnesstest.Network(t)
	h := harnesstest.AddHost(t, n, "alpha")
	files := newBadConfigFiles(t)
	agent, err := bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range badConfigCases() {
		t.Run(tc.name, func(t *testing.T) {
			// A config that wrongly passed would look for this server and
			// retry: the timeout turns that into a failure.
			cfg := h.Config("nats://"+n.Gateway.String()+":1", bucketName)
			cfg.PrivateKeyPath = files.key
			var m map[string]any
			raw, _ := json.Marshal(cfg)
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(m, files)
			}
			content, _ := json.MarshalIndent(m, "", "  ")
			if tc.raw != nil {
				content = []byte(*tc.raw)
			}
			path := harnesstest.WriteFile(t, filepath.Join(files.dir, "ikto.json"), content, 0o644)
			code, stderr := runBadAgent(t, h, agent, path, filepath.Join(files.dir, "agent.sock"), tc.asNob)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			t.Logf("stderr: %s", strings.TrimSpace(stderr))
			for _, w := range tc.words {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// runBadAgent runs ikto-agent -c path in h's namespace (or, as nobody, in
// the root namespace: only root may enter a namespace) and returns its exit
// code and stderr.
func runBadAgent(t *testing.T, h *harness.Host, agent, path, socket string, asNobody bool) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), badConfigTimeout)
	defer cancel()
	argv := []string{"ip", "netns", "exec", h.Namespace, agent, "-c", path, "-s", socket}
	if asNobody {
		// The binary may sit under a directory nobody cannot enter (a
		// checkout in /root): run a copy from a directory anyone may.
		argv = argv[4:]
		argv[0] = copyForNobody(t, agent)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asNobody {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("agent still running after %s on a broken config; stderr:\n%s", badConfigTimeout, stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run agent: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// copyForNobody copies the executable at path into a fresh directory that
// every user may enter, removed when the test ends.
func copyForNobody(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(harnesstest.SharedDir(t, "ikto-nobody-bin-"), filepath.Base(path))
	if err := harness.CopyExecutable(path, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// newBadConfigFiles makes the files the cases name, in a directory that the
// unprivileged user may enter (t.TempDir's is root's alone): a good key (mode
// 0600, root's, so unreadable by nobody), the same key given to nobody, a
// world-readable key, a file that holds no key, and creds files, one
// unreadable by nobody, one garbage.
func newBadConfigFiles(t *testing.T) *badConfigFiles {
	t.Helper()
	dir := harnesstest.SharedDir(t, "ikto-badconfig-")
	f := &badConfigFiles{
		dir: dir, key: filepath.Join(dir, "private.key"), nobodysKey: filepath.Join(dir, "nobodys.key"),
		worldKey:   filepath.Join(dir, "world.key"),
		garbageKey: filepath.Join(dir, "garbage.key"), creds: filepath.Join(dir, "nats.creds"),
		garbageCreds: filepath.Join(dir, "garbage.creds"),
	}
	if _, err := config.CreatePrivateKey(f.key); err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(f.key)
	if err != nil {
		t.Fatal(err)
	}
	for path, c := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		f.nobodysKey:   {string(k), 0o600},
		f.worldKey:     {string(k), 0o644},
		f.garbageKey:   {"not a key\n", 0o600},
		f.creds:        {"-----BEGIN NATS USER JWT-----\n", 0o600},
		f.garbageCreds: {"user: ikto\npassword: hunter2\n", 0o600},
	} {
		harnesstest.WriteFile(t, path, []byte(c.content), c.mode)
	}
	if err := os.Chown(f.nobodysKey, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return f
}
