package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// make package runs the built binary with --generate-docs: it prints no
// configuration and writes the man page and completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	r := runInit(t, nil, "--generate-docs", dir)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("--generate-docs: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	page, err := os.ReadFile(filepath.Join(dir, "man", "ikto-init.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--mesh-cidr", "EXIT STATUS"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("ikto-init.1 lacks %q", want)
		}
	}
	for _, f := range []string{"bash/ikto-init", "zsh/_ikto-init", "fish/ikto-init.fish"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}
