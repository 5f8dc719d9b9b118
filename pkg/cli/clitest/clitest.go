// Package clitest holds the checks the ikto binaries' own tests share: what
// `make package` gets from --generate-docs. Only tests import it.
package clitest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CheckDocs checks what `NAME --generate-docs dir` wrote: every man page
// named in pages (e.g. "ikto-admin-list.1") holds each of its strings, and
// the bash, zsh and fish completions of name are there.
func CheckDocs(t testing.TB, dir, name string, pages map[string][]string) {
	t.Helper()
	for page, wants := range pages {
		b, err := os.ReadFile(filepath.Join(dir, "man", page))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, want := range wants {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", page, want)
			}
		}
	}
	for _, f := range []string{"bash/" + name, "zsh/_" + name, "fish/" + name + ".fish"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}
