package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
	"github.com/vishvananda/netns"
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
		if binDir, buildErr = os.MkdirTemp("", "ikto-hook-route-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "ikto-hook-route")
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

// startInNamespace starts the hook binary the way the agent does (go-plugin,
// an empty environment), as a process inside ns: it is forked from a thread
// switched into ns, so the routes it makes land there.
func startInNamespace(t *testing.T, ns netns.NsHandle, bin string) (sdk.Hook, *plugin.Client) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{}
	cc := sdk.ClientConfig(cmd)
	cc.SkipHostEnv = true
	cc.Logger = hclog.NewNullLogger()
	logs := &logBuffer{}
	cc.Stderr = logs
	client := plugin.NewClient(cc)
	t.Cleanup(func() {
		client.Kill()
		if t.Failed() {
			t.Logf("hook process log:\n%s", logs)
		}
	})
	var rpc plugin.ClientProtocol
	err := onThreadIn(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		var err error
		rpc, err = client.Client()
		return err
	})
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	h, err := sdk.Dispense(rpc)
	if err != nil {
		t.Fatal(err)
	}
	return h, client
}

// The built binary keeps routes through a real process, and a second
// process (the agent restarted its hooks) takes over from the first: stale
// routes go, current ones stay, Stop leaves them.
func TestBinaryKeepsRoutes(t *testing.T) {
	f := newFixture(t)
	bin := hookBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node := sdktest.Node(`{"table": 100}`)
	node.Device = f.dev

	first, client := startInNamespace(t, f.ns, bin)
	if err := first.Configure(ctx, node); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := first.Apply(ctx, sdk.Diff(nil, sdktest.Peers(3))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 1024, "fd10:1::/48", "fd10:2::/48", "fd10:3::/48"))
	if err := first.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	client.Kill()

	second, _ := startInNamespace(t, f.ns, bin)
	if err := second.Configure(ctx, node); err != nil {
		t.Fatalf("Configure again: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 1024, "fd10:1::/48", "fd10:2::/48", "fd10:3::/48"))
	if err := second.Apply(ctx, sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply after restart: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 1024, "fd10:1::/48", "fd10:2::/48"))
}
