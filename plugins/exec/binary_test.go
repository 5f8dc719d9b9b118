package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// The hook binary is built once per test run into binDir.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func hookBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "ikto-hook-exec-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "ikto-hook-exec")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// The built binary, started as the agent starts hooks (go-plugin, an empty
// environment): the command gets the change, and what it prints lands in
// the hook's log on stderr, never on the plugin's stdout.
func TestBinaryServesHook(t *testing.T) {
	bin := hookBinary(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "payload.json")
	cmd := exec.Command(bin)
	cmd.Env = []string{}
	var stdout, stderr logBuffer
	cc := sdk.ClientConfig(cmd)
	cc.SkipHostEnv = true
	cc.SyncStdout, cc.Stderr = &stdout, &stderr
	cc.Logger = hclog.NewNullLogger()
	client := plugin.NewClient(cc)
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	h, err := sdk.Dispense(rpc)
	if err != nil {
		t.Fatal(err)
	}
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
	waitFor(t, 10*time.Second, "the hook to log the command's output", func() bool {
		return strings.Contains(stderr.String(), "hello from the command")
	})
	client.Kill() // waits for the process and its output streams
	if s := stdout.String(); s != "" {
		t.Errorf("the plugin's stdout carried %q", s)
	}
	if !client.Exited() {
		t.Error("hook process still running after Kill")
	}
}
