package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

// make package runs the built binary with --generate-docs: it needs no -c,
// writes the man page with the agent's own exit codes, and the completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runAgent("--generate-docs", dir); code != 0 {
		t.Fatalf("--generate-docs: exit %d, %s", code, stderr)
	}
	page, err := os.ReadFile(filepath.Join(dir, "man", "ikto-agent.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--check-config", "EXIT STATUS", "evicted", "SIGHUP"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("ikto-agent.1 lacks %q", want)
		}
	}
	for _, f := range []string{"bash/ikto-agent", "zsh/_ikto-agent", "fish/ikto-agent.fish"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestVersionLine(t *testing.T) {
	code, stdout, _ := runAgent("--version")
	if want := cli.VersionString("ikto-agent") + "\n"; code != 0 || stdout != want {
		t.Errorf("--version: exit %d, %q; want %q", code, stdout, want)
	}
}
