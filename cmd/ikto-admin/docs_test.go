package main

import (
	"testing"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/cli/clitest"
)

// make package runs the built binary with --generate-docs: one man page per
// command, each with the global flags, and the completions.
func TestGenerateDocs(t *testing.T) {
	dir := t.TempDir()
	if code, stdout, stderr := exec(t, "--generate-docs", dir); code != 0 || stdout != "" {
		t.Fatalf("--generate-docs: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	global := []string{"--nats-url"}
	// The synopsis keeps its <argument> (markdown took it for HTML once).
	clitest.CheckDocs(t, dir, "ikto-admin", map[string][]string{
		"ikto-admin.1":          append(global, `\fBikto-admin <command> [flags]\fP`),
		"ikto-admin-list.1":     global,
		"ikto-admin-evict.1":    append(global, `\fBikto-admin evict <name|ip|prefix> [--user`),
		"ikto-admin-unrevoke.1": append(global, `\fBikto-admin unrevoke <public-key> [flags]\fP`),
		"ikto-admin-status.1":   append(global, "usermod -aG ikto"),
	})
}

func TestVersionLine(t *testing.T) {
	code, stdout, _ := exec(t, "--version")
	if want := cli.VersionString("ikto-admin") + "\n"; code != 0 || stdout != want {
		t.Errorf("--version: exit %d, %q; want %q", code, stdout, want)
	}
}
