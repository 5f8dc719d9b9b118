package main

import (
	"bytes"
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

func TestVersion(t *testing.T) {
	code, stdout, _ := runAgent("--version")
	if code != 0 || !strings.HasPrefix(stdout, "ikto-agent ") {
		t.Fatalf("--version: exit %d, %q", code, stdout)
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
