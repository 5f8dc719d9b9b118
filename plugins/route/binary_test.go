package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
	"github.com/vishvananda/netns"
)

// startInNamespace starts the hook binary the way the agent does, as a
// process inside ns: it is forked from a thread switched into ns, so the
// routes it makes land there.
func startInNamespace(t *testing.T, ns netns.NsHandle, bin string) *sdktest.Launched {
	t.Helper()
	logs := logbuf.New(t, "hook process log")
	return sdktest.Launch(t, bin, sdktest.LaunchOptions{Stderr: logs, Within: func(start func() error) error {
		return onThreadIn(func() error {
			if err := netns.Set(ns); err != nil {
				return fmt.Errorf("enter netns: %w", err)
			}
			return start()
		})
	}})
}

// The built binary keeps routes through a real process, and a second
// process (the agent restarted its hooks) takes over from the first: stale
// routes go, current ones stay, Stop leaves them.
func TestBinaryKeepsRoutes(t *testing.T) {
	f := newFixture(t)
	bin := sdktest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node := sdktest.Node(`{"table": 100}`)
	node.Device = f.dev

	first := startInNamespace(t, f.ns, bin)
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
	first.Kill()

	second := startInNamespace(t, f.ns, bin)
	if err := second.Configure(ctx, node); err != nil {
		t.Fatalf("Configure again: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 1024, "fd10:1::/48", "fd10:2::/48", "fd10:3::/48"))
	if err := second.Apply(ctx, sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply after restart: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 1024, "fd10:1::/48", "fd10:2::/48"))
}
