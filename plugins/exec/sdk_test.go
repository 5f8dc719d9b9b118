package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// The hook as the agent sees it: through the ikto.hook.v1 gRPC shims the
// command gets the change, and its failure comes back with its status and
// stderr. The hook's environment is the agent's clean one: no PATH, and
// go-plugin's variables, which the command does not see.
func TestHookThroughSDK(t *testing.T) {
	path := os.Getenv("PATH")
	t.Setenv("PATH", path) // restored after the test
	if err := os.Unsetenv("PATH"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLUGIN_MIN_PORT", "10000")
	t.Setenv(sdk.Handshake.MagicCookieKey, sdk.Handshake.MagicCookieValue)

	dir := t.TempDir()
	out, env, fail := filepath.Join(dir, "payload.json"), filepath.Join(dir, "env"), filepath.Join(dir, "fail")
	line := `cat > '` + out + `' && env > '` + env + `' && if test -e '` + fail + `'; then echo "no route to the moon" >&2; exit 4; fi`
	c := sdktest.Serve(t, newExecHook(sdk.Logger()))
	ctx := context.Background()
	if err := c.Configure(ctx, sdktest.Node(string(configJSON(t, line, "5s")))); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := c.Apply(ctx, sdk.Diff(nil, sdktest.Peers(2))); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var got struct {
		Node struct {
			WGDevName string `json:"wg_dev_name"`
		} `json:"node"`
		Added []struct {
			AllowedIP string `json:"allowed_ip"`
		} `json:"added"`
	}
	if err := json.Unmarshal(mustRead(t, out), &got); err != nil {
		t.Fatalf("payload: %v", err)
	}
	if got.Node.WGDevName != "wg-ikto" || len(got.Added) != 2 || got.Added[1].AllowedIP != "fd10:2::/48" {
		t.Errorf("payload = %+v, want wg-ikto and 2 added peers ending with fd10:2::/48", got)
	}
	environ := string(mustRead(t, env))
	if !strings.Contains(environ, "PATH="+defaultPath+"\n") {
		t.Errorf("command environment has no default PATH:\n%s", environ)
	}
	if strings.Contains(environ, "PLUGIN_") || strings.Contains(environ, sdk.Handshake.MagicCookieKey) {
		t.Errorf("command environment has go-plugin's variables:\n%s", environ)
	}

	if err := os.WriteFile(fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.Apply(ctx, sdk.Diff(sdktest.Peers(2), sdktest.Peers(1)))
	if err == nil || !strings.Contains(err.Error(), "exit status 4: no route to the moon") {
		t.Fatalf("Apply with a failing command: err = %v, want its status and stderr", err)
	}
}
