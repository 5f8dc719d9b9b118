package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ikto-mesh/ikto/plugins/sdk/versionline"
)

// A hook stamped the way the Makefile stamps the shipped ones prints the
// version line every ikto binary prints, named after its executable.
func TestBinaryVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ikto-hook-exec")
	const stamp = "-X github.com/ikto-mesh/ikto/plugins/sdk.Version=v9.8.7-1-gabcdef0 -X github.com/ikto-mesh/ikto/plugins/sdk.Commit=abcdef0"
	if out, err := exec.Command("go", "build", "-ldflags", stamp, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	want := versionline.Format("ikto-hook-exec", "v9.8.7-1-gabcdef0", "abcdef0") + "\n"
	if string(out) != want {
		t.Errorf("--version printed %q, want %q", out, want)
	}
}
