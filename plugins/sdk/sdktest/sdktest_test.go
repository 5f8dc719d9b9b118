package sdktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

// recorder is a hook that keeps what it is handed and fails or blocks when
// told to.
type recorder struct {
	mu      sync.Mutex
	nodes   []sdk.Node
	changes []sdk.Change
	stops   int
	err     map[string]error // op → error to return
	block   string           // op that blocks until its context ends
	unblock chan struct{}    // closed by the test's cleanup, for a hook that ignores ctx
	sawDL   bool             // the blocked call's context had a deadline
}

func (r *recorder) call(ctx context.Context, op string) error {
	r.mu.Lock()
	err, block := r.err[op], r.block
	_, r.sawDL = ctx.Deadline()
	r.mu.Unlock()
	switch block {
	case op:
		<-ctx.Done()
		return ctx.Err()
	case op + "-ignoring-ctx":
		<-r.unblock
	}
	return err
}

func (r *recorder) Configure(ctx context.Context, n sdk.Node) error {
	r.mu.Lock()
	r.nodes = append(r.nodes, n)
	r.mu.Unlock()
	return r.call(ctx, "configure")
}

func (r *recorder) Apply(ctx context.Context, c sdk.Change) error {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
	return r.call(ctx, "apply")
}

func (r *recorder) Stop(ctx context.Context) error {
	r.mu.Lock()
	r.stops++
	r.mu.Unlock()
	return r.call(ctx, "stop")
}

// The wire must not lose or bend any field: every value the agent can send
// arrives as it was sent (nil and empty lists are the same to a hook).
func TestRoundTrip(t *testing.T) {
	v4 := sdk.Peer{Name: "v4 host", PublicKey: sdktest.Peer(7).PublicKey,
		Endpoint: netip.MustParseAddrPort("198.19.255.254:1"), Prefix: netip.MustParsePrefix("100.64.7.0/24")}
	v6 := sdk.Peer{Name: "ünïcode", PublicKey: sdktest.Peer(8).PublicKey,
		Endpoint: netip.MustParseAddrPort("[fd00::8]:65535"), Prefix: netip.MustParsePrefix("fd10:8::/48")}
	unknown := sdk.Peer{Name: "no endpoint yet", PublicKey: sdktest.Peer(9).PublicKey, Prefix: netip.MustParsePrefix("fd10:9::/48")}
	tests := []struct {
		name   string
		node   sdk.Node
		change sdk.Change
	}{
		{"full", sdktest.Node(`{"table":100,"nested":{"a":[1,2]}}`), sdk.Change{
			Peers: []sdk.Peer{v4, v6, unknown}, Added: []sdk.Peer{v4}, Updated: []sdk.Peer{v6},
			Removed: []sdk.Peer{sdktest.Peer(3)},
		}},
		{"ipv4 mesh, no config", sdk.Node{Self: v4, Mesh: netip.MustParsePrefix("100.64.0.0/10"), Device: "wg0", ListenPort: 1, AgentVersion: "v0.4.0"},
			sdk.Change{Peers: sdktest.Peers(50), Added: sdktest.Peers(50)}},
		{"zero node, empty change", sdk.Node{}, sdk.Change{}},
		{"everything removed", sdktest.Node(`"just a string"`), sdk.Change{Removed: sdktest.Peers(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			c := sdktest.Serve(t, r)
			ctx := context.Background()
			if err := c.Configure(ctx, tt.node); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if err := c.Apply(ctx, tt.change); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if err := c.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if diff := cmp.Diff([]sdk.Node{tt.node}, r.nodes, cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})); diff != "" {
				t.Errorf("node (-sent +received):\n%s", diff)
			}
			if diff := cmp.Diff([]sdk.Change{tt.change}, r.changes, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})); diff != "" {
				t.Errorf("change (-sent +received):\n%s", diff)
			}
			if r.stops != 1 {
				t.Errorf("Stop reached the hook %d times, want 1", r.stops)
			}
		})
	}
}

// The nil config of a node without one stays nil (Node.Config's doc), not
// an empty RawMessage a hook would fail to decode.
func TestAbsentConfigIsNil(t *testing.T) {
	r := &recorder{}
	if err := sdktest.Serve(t, r).Configure(context.Background(), sdktest.Node("")); err != nil {
		t.Fatal(err)
	}
	if r.nodes[0].Config != nil {
		t.Fatalf("Config = %q, want nil", r.nodes[0].Config)
	}
	var v map[string]any
	if err := json.Unmarshal(sdktest.Node(`{"a":1}`).Config, &v); err != nil || v["a"] != 1.0 {
		t.Fatalf("sdktest.Node config = %v, %v", v, err)
	}
}

// A hook's error reaches the agent with its text, marked as the hook's own.
func TestHookErrorsSurface(t *testing.T) {
	ctx := context.Background()
	calls := map[string]func(sdk.Hook) error{
		"configure": func(h sdk.Hook) error { return h.Configure(ctx, sdktest.Node("")) },
		"apply":     func(h sdk.Hook) error { return h.Apply(ctx, sdk.Diff(nil, sdktest.Peers(2))) },
		"stop":      func(h sdk.Hook) error { return h.Stop(ctx) },
	}
	for op, call := range calls {
		t.Run(op, func(t *testing.T) {
			msg := "route table 100: " + op + " failed: operation not permitted"
			c := sdktest.Serve(t, &recorder{err: map[string]error{op: errors.New(msg)}})
			err := call(c)
			var re *sdk.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want a *sdk.RemoteError", err, err)
			}
			if re.Op != op || re.Message != msg {
				t.Errorf("RemoteError = {%q, %q}, want {%q, %q}", re.Op, re.Message, op, msg)
			}
			if !strings.Contains(err.Error(), msg) {
				t.Errorf("err text %q does not carry the hook's message", err)
			}
			// The other calls are unaffected.
			for other, call := range calls {
				if other != op {
					if err := call(c); err != nil {
						t.Errorf("%s after a failed %s: %v", other, op, err)
					}
				}
			}
		})
	}
}

// The caller's deadline reaches the hook, and a hook that ignores it still
// cannot hold the caller past it.
func TestDeadlineHonoured(t *testing.T) {
	for _, block := range []string{"apply", "apply-ignoring-ctx"} {
		t.Run(block, func(t *testing.T) {
			r := &recorder{block: block, unblock: make(chan struct{})}
			t.Cleanup(func() { close(r.unblock) })
			c := sdktest.Serve(t, r)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := c.Apply(ctx, sdk.Change{Peers: sdktest.Peers(1)})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Apply past its deadline: err = %v, want context.DeadlineExceeded", err)
			}
			var re *sdk.RemoteError
			if errors.As(err, &re) {
				t.Fatalf("a timeout must not look like the hook's own error: %v", err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if !r.sawDL {
				t.Error("the hook's context had no deadline")
			}
		})
	}
}

// A call whose context is already cancelled never reaches the hook.
func TestCancelledCallIsNotDelivered(t *testing.T) {
	r := &recorder{}
	c := sdktest.Serve(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Apply(ctx, sdk.Change{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(r.changes) != 0 {
		t.Fatalf("hook got %d changes, want none", len(r.changes))
	}
}
