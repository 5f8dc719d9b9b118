package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
)

func runAgent(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                        // no -c
		{"--bogus"},               // unknown flag
		{"-c", "x.json", "extra"}, // stray argument
		{"-c", "x.json", "--log-level", "loud"},
		{"-c", "x.json", "--log-format", "xml"},
	} {
		code, _, stderr := runAgent(args...)
		if code != cli.ExitUsage || !strings.Contains(stderr, "ikto-agent") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 with a message", args, code, stderr)
		}
	}
}

// --version and -v, as every ikto binary answers them.
func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		code, stdout, _ := runAgent(flag)
		if code != 0 || !strings.HasPrefix(stdout, "ikto-agent ") {
			t.Errorf("%s: exit %d, %q", flag, code, stdout)
		}
	}
}

func TestConfigErrorsExit1NamingTheProblem(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if _, err := config.CreatePrivateKey(key); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `"advertise_address":"198.18.0.2","private_address":"fd10:1::","private_key_path":"` + key + `","nats_url":"nats://127.0.0.1:1"`
	tests := []struct {
		name, path string
		want       []string
	}{
		{"missing file", filepath.Join(dir, "absent.json"), []string{"absent.json", "no such file"}},
		{"not json", write("bad.json", "{"), []string{"bad.json", "not valid JSON"}},
		{"unknown field", write("unknown.json", `{`+good+`,"colour":"blue"}`), []string{"colour", "unknown field"}},
		{"misaligned", write("mis.json", `{`+strings.Replace(good, `fd10:1::`, `fd10:1::5`, 1)+`}`), []string{"private_address", "use fd10:1::"}},
		{"no advertise", write("noadv.json", `{`+strings.Replace(good, `"198.18.0.2"`, `""`, 1)+`}`), []string{"advertise_address", "missing"}},
		{"bare nats url", write("nourl.json", `{`+strings.Replace(good, `nats://127.0.0.1:1`, `nats://`, 1)+`}`), []string{"nats_url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runAgent("-c", tt.path, "-s", filepath.Join(dir, "sock"))
			if code != cli.ExitError {
				t.Fatalf("exit %d, want 1; stderr %q", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"nats://a:4222"}, "nats://a:4222"},
		{[]string{"nats://ikto-host:s3cret@a:4222", "tls://b:4222"}, "nats://ikto-host:xxxxx@a:4222,tls://b:4222"},
		{[]string{"nats://s3cret-token@a:4222"}, "nats://xxxxx@a:4222"},
	}
	for _, tt := range tests {
		if got := config.RedactURLs(tt.in); got != tt.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The agent refuses secrets others may read and hooks others may replace,
// and --check-config says so with the very line the agent exits with.
func TestStrictModesCheckConfigAndStart(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	key := filepath.Join(dir, "wg.key")
	if _, err := config.CreatePrivateKey(key); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	hook := file("ikto-hook-ok", 0o755)
	badHook := file("open/ikto-hook", 0o755)
	link := filepath.Join(dir, "ikto-hook-link")
	if err := os.Symlink(badHook, link); err != nil {
		t.Fatal(err)
	}
	base := config.Config{
		AdvertiseAddress: "198.18.0.2", PrivateAddress: "fd10:1::", PrivateKeyPath: key, NATSURL: "nats://127.0.0.1:1",
	}
	tests := []struct {
		name  string
		edit  func(*config.Config)
		words []string
	}{
		{"creds readable by others", func(c *config.Config) { c.NATSCreds = file("host.creds", 0o644) },
			[]string{"nats_creds", "host.creds is readable by group or others (mode 0644)", "chmod 600 " + filepath.Join(dir, "host.creds")}},
		{"creds writable by group", func(c *config.Config) { c.NATSCreds = file("group.creds", 0o620) },
			[]string{"nats_creds", "group.creds is writable by group or others (mode 0620)", "chmod 600"}},
		{"tls key readable by group", func(c *config.Config) {
			c.NATSTLSCert, c.NATSTLSKey = file("cert.pem", 0o644), file("tls.key", 0o640)
		}, []string{"nats_tls_key", "tls.key is readable by group or others (mode 0640)", "chmod 600"}},
		{"key readable by others", func(c *config.Config) { c.PrivateKeyPath = file("world.key", 0o604) },
			[]string{"private_key_path", "world.key is readable by group or others (mode 0604)", "chmod 600"}},
		{"hook in a world-writable directory", func(c *config.Config) {
			c.Hooks = []config.HookConfig{{Name: "ok", Path: hook}, {Name: "bad", Path: badHook}}
		}, []string{"hooks[1].path", "directory " + open + " is writable by group or others (mode 0777)", "chmod go-w " + open}},
		{"hook through a link", func(c *config.Config) { c.Hooks = []config.HookConfig{{Name: "l", Path: link}} },
			[]string{"hooks[0].path", link + " (resolves to " + badHook + ")", "directory " + open + " is writable"}},
		{"hook world-writable", func(c *config.Config) { c.Hooks = []config.HookConfig{{Name: "w", Path: file("w-hook", 0o757)}} },
			[]string{"hooks[0].path", "w-hook is writable by group or others (mode 0757)", "chmod go-w"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "ikto"+string(rune('a'+i))+".json")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, checked := runAgent("-c", path, "--check-config")
			if code != cli.ExitError || stdout != "" {
				t.Fatalf("--check-config: exit %d, stdout %q; want 1 and nothing", code, stdout)
			}
			for _, w := range tt.words {
				if !strings.Contains(checked, w) {
					t.Errorf("--check-config stderr %q lacks %q", checked, w)
				}
			}
			if strings.Count(checked, "\n") != 1 {
				t.Errorf("--check-config stderr %q is not one line", checked)
			}
			code, _, started := runAgent("-c", path, "-s", filepath.Join(dir, "sock"))
			if code != cli.ExitError || started != checked {
				t.Errorf("start: exit %d, stderr %q; want 1 and what --check-config said, %q", code, started, checked)
			}
		})
	}

	t.Run("hook root may write, in t.TempDir()", func(t *testing.T) {
		c := base
		c.Hooks = []config.HookConfig{{Name: "ok", Path: hook}}
		b, _ := json.Marshal(c)
		path := filepath.Join(dir, "good.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runAgent("-c", path, "--check-config")
		if code != cli.ExitOK || !strings.Contains(stdout, hook) {
			t.Fatalf("--check-config: exit %d\n%s%s", code, stdout, stderr)
		}
	})
}
