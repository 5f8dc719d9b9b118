// Package natsctxtest is test support for code that reads NATS settings the
// way the nats CLI does (package natsctx): it keeps a developer's own
// NATS_* variables and contexts out of tests, and writes contexts for them.
package natsctxtest

import (
	"os"
	"path/filepath"
	"testing"
)

// Isolate unsets vars (natsctx.Vars: every variable natsctx reads) and
// points XDG_CONFIG_HOME at a directory that does not exist, so no context
// is found. Call it from a test package's init; tests that need settings set
// them with t.Setenv or UseContexts.
func Isolate(name string, vars []string) {
	for _, k := range vars {
		os.Unsetenv(k)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(os.TempDir(), name+"-test-no-nats-contexts"))
}

// WriteContexts makes a fresh XDG_CONFIG_HOME holding the nats CLI contexts
// (name → JSON) and, when selected is set, a context.txt naming it, and
// returns its path.
func WriteContexts(t testing.TB, selected string, contexts map[string]string) string {
	t.Helper()
	xdg := t.TempDir()
	dir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range contexts {
		if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if selected != "" {
		if err := os.WriteFile(filepath.Join(xdg, "nats", "context.txt"), []byte(selected+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return xdg
}

// UseContexts is WriteContexts with the test's environment pointed at it.
func UseContexts(t *testing.T, selected string, contexts map[string]string) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", WriteContexts(t, selected, contexts))
}
