package main

import (
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli/clitest"
)

// make package runs the built binary with --generate-docs: it prints no
// configuration and writes the man page and completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	r := runInit(t, nil, "--generate-docs", dir)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("--generate-docs: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	clitest.CheckDocs(t, dir, "ikto-init", map[string][]string{
		"ikto-init.1": {"--mesh-cidr", "EXIT STATUS"},
	})
}
