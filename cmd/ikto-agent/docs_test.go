package main

import (
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/cli/clitest"
)

// make package runs the built binary with --generate-docs: it needs no -c,
// writes the man page with the agent's own exit codes, and the completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runAgent("--generate-docs", dir); code != 0 {
		t.Fatalf("--generate-docs: exit %d, %s", code, stderr)
	}
	clitest.CheckDocs(t, dir, "ikto-agent", map[string][]string{
		"ikto-agent.1": {"--check-config", "EXIT STATUS", "evicted", "SIGHUP", "ikto-agent runs on every host"},
	})
}

func TestVersionLine(t *testing.T) {
	code, stdout, _ := runAgent("--version")
	if want := cli.VersionString("ikto-agent") + "\n"; code != 0 || stdout != want {
		t.Errorf("--version: exit %d, %q; want %q", code, stdout, want)
	}
}
