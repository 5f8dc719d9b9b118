package main

import (
	"context"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// The hook as the agent sees it: through the ikto.hook.v1 gRPC shims, a
// join and a departure reach the kernel, and a bad config comes back as an
// error that names the key.
func TestHookThroughSDK(t *testing.T) {
	f := newFixture(t)
	c := sdktest.Serve(t, f.newHook())
	ctx := context.Background()

	bad := sdktest.Node(`{"protocol": 4}`)
	bad.Device = f.dev
	if err := c.Configure(ctx, bad); err == nil || !strings.Contains(err.Error(), "protocol: 4") {
		t.Fatalf("Configure with protocol 4: err = %v, want one naming the protocol", err)
	}

	node := sdktest.Node(`{"table": 100, "metric": 10}`)
	node.Device = f.dev
	if err := c.Configure(ctx, node); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	three, two := sdktest.Peers(3), sdktest.Peers(2)
	if err := c.Apply(ctx, sdk.Diff(nil, three)); err != nil {
		t.Fatalf("Apply 3 peers: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 10, "fd10:1::/48", "fd10:2::/48", "fd10:3::/48"))
	if err := c.Apply(ctx, sdk.Diff(three, two)); err != nil {
		t.Fatalf("Apply 2 peers: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 10, "fd10:1::/48", "fd10:2::/48"))
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	checkRoutes(t, f, defaultProtocol, wantRoutes(100, f.dev, 10, "fd10:1::/48", "fd10:2::/48"))
}
