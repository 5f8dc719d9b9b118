package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
	"github.com/ikto-mesh/ikto/plugins/sdk/versionline"
)

// The built binary, started as the agent starts hooks (go-plugin, an empty
// environment): the command gets the change, and what it prints lands in
// the hook's log on stderr, never on the plugin's stdout.
func TestBinaryServesHook(t *testing.T) {
	bin := sdktest.Build(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "payload.json")
	var stdout, stderr logbuf.Buffer
	h := sdktest.Launch(t, bin, sdktest.LaunchOptions{Stdout: &stdout, Stderr: &stderr})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	line := `cat > '` + out + `'; echo "hello from the command"`
	if err := h.Configure(ctx, sdktest.Node(string(configJSON(t, line, "")))); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := h.Apply(ctx, sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var got struct{ Added []json.RawMessage }
	if err := json.Unmarshal(mustRead(t, out), &got); err != nil || len(got.Added) != 2 {
		t.Errorf("payload: %d added, err %v; want 2", len(got.Added), err)
	}
	testkit.Eventually(t, 10*time.Second, "the hook to log the command's output", testkit.True(func() bool {
		return strings.Contains(stderr.String(), "hello from the command")
	}))
	h.Kill() // waits for the process and its output streams
	if s := stdout.String(); s != "" {
		t.Errorf("the plugin's stdout carried %q", s)
	}
	if !h.Exited() {
		t.Error("hook process still running after Kill")
	}
}

// A hook stamped the way the Makefile stamps the shipped ones prints the
// version line every ikto binary prints, named after its executable.
func TestBinaryVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ikto-hook-exec")
	const stamp = "-X github.com/ikto-mesh/ikto/plugins/sdk.Version=9.8.7-dev.1+gabcdef0 -X github.com/ikto-mesh/ikto/plugins/sdk.Commit=abcdef0"
	if out, err := exec.Command("go", "build", "-ldflags", stamp, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := versionline.Format("ikto-hook-exec", "9.8.7-dev.1+gabcdef0", "abcdef0") + "\n"
	for _, flag := range []string{"--version", "-v"} {
		out, err := exec.Command(bin, flag).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", bin, flag, err)
		}
		if string(out) != want {
			t.Errorf("%s printed %q, want %q", flag, out, want)
		}
	}
}
