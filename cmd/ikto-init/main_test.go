package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/ipam"
)

// seeded is a deterministic randomness source: two sources with one seed draw
// the same prefixes, which is how the tests know what ikto-init will draw.
func seeded(seed byte) io.Reader {
	return rand.NewChaCha8([32]byte{seed})
}

// draws are the first n prefixes ikto-init draws from seeded(seed).
func draws(t *testing.T, seed byte, mesh string, bits, n int) []netip.Prefix {
	t.Helper()
	rnd := seeded(seed)
	var out []netip.Prefix
	for range n {
		p, err := ipam.RandomPrefix(netip.MustParsePrefix(mesh), bits, rnd)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

type result struct {
	code           int
	stdout, stderr string
}

// runInit runs ikto-init with --template: these tests check what each flag
// writes, not that the agent's required fields are there
// (TestIncompleteConfigRefused does).
func runInit(t *testing.T, rnd io.Reader, args ...string) result {
	t.Helper()
	return runStrict(t, rnd, append([]string{"--template"}, args...)...)
}

// runStrict runs ikto-init with exactly args.
func runStrict(t *testing.T, rnd io.Reader, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr, rnd)
	return result{code, stdout.String(), stderr.String()}
}

// TestIncompleteConfigRefused: without the fields the agent needs,
// ikto-init prints nothing and exits 2 naming the missing flags and an
// example; with them (or --template) it prints the config.
func TestIncompleteConfigRefused(t *testing.T) {
	key := filepath.Join(t.TempDir(), "wg.key")
	for _, tc := range []struct {
		args    []string
		missing []string
	}{
		{nil, []string{"--advertise-address", "--private-key-path", "--nats-url"}},
		{[]string{"--advertise-address", "192.0.2.10"}, []string{"--private-key-path", "--nats-url"}},
		{[]string{"--advertise-address", "192.0.2.10", "--private-key-path", key}, []string{"--nats-url"}},
	} {
		r := runStrict(t, nil, tc.args...)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("ikto-init %v: exit %d, stdout %q; want 2 and nothing printed", tc.args, r.code, r.stdout)
		}
		for _, want := range append(tc.missing, "missing", "--template") {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("ikto-init %v: stderr does not name %s:\n%s", tc.args, want, r.stderr)
			}
		}
		if strings.Count(r.stderr, "ikto-init:") > 1 {
			t.Errorf("ikto-init %v: more than one line of complaint:\n%s", tc.args, r.stderr)
		}
	}
	if _, err := os.Stat(key); err == nil {
		t.Error("a refused run created the private key")
	}
}

// A credentials file that is not there would stop the agent at start:
// ikto-init refuses it, naming the file, before it makes a key or prints
// a config.
func TestMissingCredsRefused(t *testing.T) {
	dir := t.TempDir()
	key, creds := filepath.Join(dir, "wg.key"), filepath.Join(dir, "host.creds")
	r := runStrict(t, nil, "--advertise-address", "192.0.2.10", "--private-key-path", key,
		"--nats-url", "nats://127.0.0.1:1", "--nats-creds", creds)
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, creds) || !strings.Contains(r.stderr, "ikto-admin enroll") {
		t.Errorf("missing creds: exit %d, stdout %q, stderr %q; want 2 naming the file and enroll", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(key); err == nil {
		t.Error("a refused run created the private key")
	}
}

// mustRun runs ikto-init, expects success and returns the printed config.
func mustRun(t *testing.T, rnd io.Reader, args ...string) (*config.Config, result) {
	t.Helper()
	r := runInit(t, rnd, args...)
	if r.code != 0 {
		t.Fatalf("ikto-init %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return decodeStrict(t, []byte(r.stdout)), r
}

func decodeStrict(t *testing.T, data []byte) *config.Config {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c config.Config
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("output is not a config: %v\n%s", err, data)
	}
	return &c
}

// topLevelKeys lists the keys of a JSON object in the order they appear.
func topLevelKeys(t *testing.T, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("output does not start with an object: %v %v", tok, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// checkPrivateAddress fails unless the config's address starts a subnet of
// its own subnet_prefix inside its mesh.
func checkPrivateAddress(t *testing.T, c *config.Config) netip.Prefix {
	t.Helper()
	mesh := netip.MustParsePrefix(c.MeshCIDR)
	a, err := netip.ParseAddr(c.PrivateAddress)
	if err != nil {
		t.Fatalf("private_address %q: %v", c.PrivateAddress, err)
	}
	p := netip.PrefixFrom(a, c.SubnetPrefix)
	if !mesh.Contains(a) || p.Masked() != p {
		t.Fatalf("private_address %s is not an aligned /%d inside %s", a, c.SubnetPrefix, mesh)
	}
	return p
}

func TestDefaultOutput(t *testing.T) {
	c, r := mustRun(t, nil)
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing", r.stderr)
	}
	wantKeys := []string{
		"name", "advertise_address", "private_address", "subnet_prefix", "mesh_cidr",
		"wg_dev_name", "wg_port", "private_key_path", "nats_creds", "nats_url", "nats_kv",
	}
	if diff := cmp.Diff(wantKeys, topLevelKeys(t, []byte(r.stdout))); diff != "" {
		t.Errorf("printed keys (-want +got):\n%s", diff)
	}
	want := &config.Config{
		Name:         hostName(),
		SubnetPrefix: 48, MeshCIDR: "fd10::/16", WGDevName: "wg-ikto", WGPort: 51820,
		NATSURL: "nats://", NATSKV: "ikto-mesh",
	}
	if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(config.Config{}, "PrivateAddress")); diff != "" {
		t.Errorf("default config (-want +got):\n%s", diff)
	}
	checkPrivateAddress(t, c)
	if !strings.HasPrefix(r.stdout, "{\n  \"name\": ") || !strings.HasSuffix(r.stdout, "\n}\n") {
		t.Errorf("output is not 2-space indented JSON ending in a newline:\n%s", r.stdout)
	}
	// What ikto-init prints, the agent's parser reads.
	if _, err := config.Parse(strings.NewReader(r.stdout)); err != nil {
		t.Errorf("config.Parse(output): %v", err)
	}
}

func TestDrawUsesRandomSource(t *testing.T) {
	c, _ := mustRun(t, seeded(9))
	want := draws(t, 9, "fd10::/16", 48, 1)[0]
	if got := checkPrivateAddress(t, c); got != want {
		t.Errorf("private prefix = %s, want the first draw %s", got, want)
	}
	// Without an injected source every run draws afresh.
	a, _ := mustRun(t, nil)
	b, _ := mustRun(t, nil)
	if a.PrivateAddress == b.PrivateAddress {
		t.Errorf("two crypto/rand runs both drew %s", a.PrivateAddress)
	}
}

func TestMeshFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		mesh string
		bits int
	}{
		{"ipv4 short flags", []string{"-m", "100.64.0.0/10", "-p", "24"}, "100.64.0.0/10", 24},
		{"ipv4 long flags", []string{"--mesh-cidr", "100.64.0.0/10", "--subnet-prefix", "24"}, "100.64.0.0/10", 24},
		{"ipv4 0.3.0 aliases", []string{"--mesh-ip-net", "100.64.0.0/10", "--subnet-prefix-length=24"}, "100.64.0.0/10", 24},
		{"ipv4 /24 mesh of /32s", []string{"-m", "10.9.8.0/24", "-p", "32"}, "10.9.8.0/24", 32},
		{"ipv6 aliases", []string{"--mesh-ip-net=fd20::/24", "--subnet-prefix-length", "64"}, "fd20::/24", 64},
		{"ipv6 /127 of /128s", []string{"-m", "fd00::/127", "-p", "128"}, "fd00::/127", 128},
		{"ipv6 default prefix", []string{"-m", "fd99::/20"}, "fd99::/20", 48},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range byte(20) {
				c, _ := mustRun(t, seeded(seed), tt.args...)
				if c.MeshCIDR != tt.mesh || c.SubnetPrefix != tt.bits {
					t.Fatalf("mesh_cidr, subnet_prefix = %s, %d; want %s, %d", c.MeshCIDR, c.SubnetPrefix, tt.mesh, tt.bits)
				}
				checkPrivateAddress(t, c)
			}
		})
	}
}

func TestFieldFlags(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "nats.creds")
	c, _ := mustRun(t, nil,
		"--name", "host-a", "--advertise-address", "192.0.2.10", "--wg-dev-name", "wg0",
		"--wg-port", "4500", "--nats-creds", creds, "--nats-kv", "my_mesh-1",
	)
	want := &config.Config{
		Name: "host-a", AdvertiseAddress: "192.0.2.10", SubnetPrefix: 48, MeshCIDR: "fd10::/16",
		WGDevName: "wg0", WGPort: 4500, NATSCreds: creds, NATSURL: "nats://", NATSKV: "my_mesh-1",
	}
	if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(config.Config{}, "PrivateAddress")); diff != "" {
		t.Errorf("config from flags (-want +got):\n%s", diff)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		words []string // the flag, and the fix where there is one
	}{
		{"unknown flag", []string{"--mesh"}, []string{"unknown flag: --mesh"}},
		{"unknown shorthand", []string{"-x"}, []string{"-x"}},
		{"extra argument", []string{"ikto.json"}, []string{`"ikto.json"`, "only flags"}},
		{"missing value", []string{"-m"}, []string{"-m", "argument"}},
		{"mesh not a CIDR", []string{"-m", "fd10::"}, []string{"--mesh-cidr", `"fd10::"`, "fd10::/16"}},
		{"mesh alias not a CIDR", []string{"--mesh-ip-net", "ten"}, []string{"--mesh-cidr", `"ten"`}},
		{"mesh host bits", []string{"-m", "fd10::1/16"}, []string{"--mesh-cidr", "host bits", "use fd10::/16"}},
		{"mesh v4-mapped", []string{"-m", "::ffff:100.64.0.0/106", "-p", "120"}, []string{"--mesh-cidr", "plain IPv4"}},
		{"prefix equals mesh", []string{"-p", "16"}, []string{"--subnet-prefix 16", "longer than the mesh prefix /16"}},
		{"prefix too long", []string{"-p", "129"}, []string{"--subnet-prefix 129", "at most /128"}},
		{"prefix default in v4 mesh", []string{"-m", "100.64.0.0/10"}, []string{"--subnet-prefix 48", "at most /32", "-p 24"}},
		{"prefix not a number", []string{"--subnet-prefix-length", "x"}, []string{"subnet-prefix", `"x"`}},
		{"port 0", []string{"--wg-port", "0"}, []string{"--wg-port 0", "1-65535"}},
		{"port 65536", []string{"--wg-port", "65536"}, []string{"--wg-port 65536", "1-65535"}},
		{"port not a number", []string{"--wg-port", "wg"}, []string{"--wg-port", `"wg"`}},
		{"dev name too long", []string{"--wg-dev-name", "wg-ikto-too-long"}, []string{"--wg-dev-name", "1-15"}},
		{"dev name slash", []string{"--wg-dev-name", "wg/0"}, []string{"--wg-dev-name"}},
		{"bucket name", []string{"--nats-kv", "ikto.mesh"}, []string{"--nats-kv", `"ikto.mesh"`, "bucket name"}},
		{"advertise hostname", []string{"--advertise-address", "host-a"}, []string{"--advertise-address", `"host-a"`}},
		{"advertise loopback", []string{"--advertise-address", "127.0.0.1"}, []string{"--advertise-address", "unicast"}},
		{"nats url scheme", []string{"--nats-url", "http://nats:4222"}, []string{"--nats-url", "nats, tls, ws or wss"}},
		{"nats url no scheme", []string{"--nats-url", "nats:4222"}, []string{"--nats-url", "not a server URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runInit(t, nil, tt.args...)
			if r.code != 2 {
				t.Fatalf("ikto-init %s: exit %d, want 2; stderr:\n%s", strings.Join(tt.args, " "), r.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing on a usage error", r.stdout)
			}
			for _, w := range tt.words {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not contain %q", r.stderr, w)
				}
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	r := runInit(t, nil, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--mesh-cidr") || !strings.Contains(r.stdout, "--mesh-ip-net") {
		t.Errorf("--help: exit %d, stdout:\n%s", r.code, r.stdout)
	}
	r = runInit(t, nil, "--version")
	if want := cli.VersionString("ikto-init") + "\n"; r.code != 0 || r.stdout != want {
		t.Errorf("--version: exit %d, stdout %q; want %q", r.code, r.stdout, want)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestOutputFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ikto.json")
	r := runInit(t, seeded(1), "-o", path, "--name", "first")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("-o: exit %d, stdout %q, stderr %q; want 0 and nothing printed", r.code, r.stdout, r.stderr)
	}
	if m := fileMode(t, path); m != 0o600 {
		t.Errorf("-o file mode = %04o, want 0600", m)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c := decodeStrict(t, first); c.Name != "first" {
		t.Errorf("-o file name = %q, want first", c.Name)
	}

	r = runInit(t, seeded(2), "-o", path, "--name", "second")
	if r.code != 1 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "--force") {
		t.Errorf("-o over an existing file: exit %d, stderr %q; want 1 naming the file and --force", r.code, r.stderr)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, first) {
		t.Errorf("-o without --force changed the file")
	}

	// --force replaces it, and a file someone opened up comes back 0600.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runInit(t, seeded(2), "-o", path, "--force", "--name", "second"); r.code != 0 {
		t.Fatalf("-o --force: exit %d, stderr %q", r.code, r.stderr)
	}
	now, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c := decodeStrict(t, now); c.Name != "second" {
		t.Errorf("-o --force did not replace the file: name %q", c.Name)
	}
	if m := fileMode(t, path); m != 0o600 {
		t.Errorf("-o --force file mode = %04o, want 0600", m)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) > 0 {
		t.Errorf("-o --force left temporary files: %v", left)
	}

	if r := runInit(t, nil, "-o", filepath.Join(t.TempDir(), "no", "dir", "ikto.json")); r.code != 1 || !strings.Contains(r.stderr, "-o") {
		t.Errorf("-o into a missing directory: exit %d, stderr %q; want 1 naming -o", r.code, r.stderr)
	}
}

func TestPrivateKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wg.key")
	c, r := mustRun(t, nil, "--private-key-path", path)
	if c.PrivateKeyPath != path {
		t.Errorf("private_key_path = %q, want %q", c.PrivateKeyPath, path)
	}
	if m := fileMode(t, path); m != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", m)
	}
	k, err := config.LoadPrivateKey(path)
	if err != nil {
		t.Fatalf("created key does not load: %v", err)
	}
	if !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, k.PublicKey().String()) {
		t.Errorf("stderr %q should name the new key file and its public key", r.stderr)
	}

	// A second run keeps the key, quietly.
	before, _ := os.ReadFile(path)
	_, r = mustRun(t, nil, "--private-key-path", path)
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("second run replaced the key file")
	}
	if r.stderr != "" {
		t.Errorf("second run stderr = %q, want nothing", r.stderr)
	}

	// Whatever the file holds, it is never overwritten; a file the agent would
	// refuse gets a warning.
	other := filepath.Join(dir, "other.key")
	if err := os.WriteFile(other, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, r = mustRun(t, nil, "--private-key-path", other)
	if data, _ := os.ReadFile(other); string(data) != "precious" {
		t.Errorf("existing file overwritten: now %q", data)
	}
	if !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, other) {
		t.Errorf("stderr %q should warn about %s", r.stderr, other)
	}

	// No key is created when the configuration cannot be written.
	out := filepath.Join(dir, "ikto.json")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unused := filepath.Join(dir, "unused.key")
	if r := runInit(t, nil, "-o", out, "--private-key-path", unused); r.code != 1 {
		t.Fatalf("exit %d, want 1 for an existing -o file", r.code)
	}
	if _, err := os.Stat(unused); err == nil {
		t.Errorf("key %s created although ikto-init failed", unused)
	}

	// A missing directory is created, private to root (0700); one that
	// cannot be is an error naming the flag.
	nested := filepath.Join(dir, "no", "dir", "wg.key")
	if _, r := mustRun(t, nil, "--private-key-path", nested); !strings.Contains(r.stderr, nested) {
		t.Errorf("key in a missing directory: stderr %q, want it created", r.stderr)
	}
	for _, d := range []string{filepath.Join(dir, "no"), filepath.Join(dir, "no", "dir")} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("directory %s: %v, err %v; want mode 0700", d, st.Mode(), err)
		}
	}
	if r := runInit(t, nil, "--private-key-path", filepath.Join(other, "wg.key")); r.code != 1 || !strings.Contains(r.stderr, "--private-key-path") {
		t.Errorf("key under a file: exit %d, stderr %q; want 1 naming --private-key-path", r.code, r.stderr)
	}
}
