package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

// make package runs the built binary with --generate-docs: one man page per
// command, and the completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	if code, stdout, stderr := exec(t, "--generate-docs", dir); code != 0 || stdout != "" {
		t.Fatalf("--generate-docs: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	for _, page := range []string{"ikto-admin.1", "ikto-admin-list.1", "ikto-admin-evict.1", "ikto-admin-status.1"} {
		b, err := os.ReadFile(filepath.Join(dir, "man", page))
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.Contains(string(b), "--nats-url") {
			t.Errorf("%s lacks the global flags", page)
		}
	}
	for _, f := range []string{"bash/ikto-admin", "zsh/_ikto-admin", "fish/ikto-admin.fish"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestVersionLine(t *testing.T) {
	code, stdout, _ := exec(t, "--version")
	if want := cli.VersionString("ikto-admin") + "\n"; code != 0 || stdout != want {
		t.Errorf("--version: exit %d, %q; want %q", code, stdout, want)
	}
}
