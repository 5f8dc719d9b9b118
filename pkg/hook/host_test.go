package hook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

var cmpNet = cmp.Options{cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})}

// A hook is configured with the node and its own config, then gets the full
// state with everything Added, then differences.
func TestConfigureThenApply(t *testing.T) {
	th := startHost(t, &testHook{name: "rec"})
	a, b := sdktest.Peers(3), append(sdktest.Peers(2), sdktest.Peer(9))
	th.Update(a)
	testkit.Eventually(t, waitTimeout, "first apply", testkit.True(func() bool { return lastApply(th.calls(t, "rec"), 0) != nil }))
	th.Update(b)
	testkit.Eventually(t, waitTimeout, "second apply", testkit.True(func() bool {
		c := lastApply(th.calls(t, "rec"), 0)
		return c != nil && len(c.Change.Peers) == 3 && c.Change.Peers[2] == sdktest.Peer(9)
	}))

	calls := th.calls(t, "rec")
	if len(calls) != 3 || calls[0].Op != "configure" {
		t.Fatalf("calls = %+v, want configure, apply, apply", calls)
	}
	wantNode := testNode
	wantNode.Config = hooktest.Config(th.hooks["rec"].dir)
	if diff := cmp.Diff(wantNode, *calls[0].Node, cmpNet); diff != "" {
		t.Errorf("configure node (-want +got):\n%s", diff)
	}
	for i, want := range []sdk.Change{sdk.Diff(nil, a), sdk.Diff(a, b)} {
		if diff := cmp.Diff(want, *calls[i+1].Change, cmpNet); diff != "" {
			t.Errorf("apply %d (-want +got):\n%s", i+1, diff)
		}
	}
	if th.up("rec") != 1 || th.failures("rec") != 0 {
		t.Errorf("up = %v, failures = %v; want 1, 0", th.up("rec"), th.failures("rec"))
	}
	// The hook's own log line (hclog JSON on its stderr) is in the host's
	// log, tagged with the hook's name and keeping its fields.
	if !th.logs.Contains(`level=INFO msg="recorder configured" hook=rec`) || !th.logs.Contains("device=wgtest0") {
		t.Errorf("the hook's log line did not reach the host's log")
	}
}

// A hook that fails in any way is counted, killed, restarted, and its fresh
// process is handed the full state; once it behaves it stays up.
func TestFailedHookIsRestartedWithFullState(t *testing.T) {
	tests := []struct {
		name, op, act, timeout, logged string
	}{
		{"configure error", "configure", "fail", "", "configure: no table 100"},
		{"apply error", "apply", "fail", "", "apply: no table 100"},
		{"apply exits", "apply", "exit", "", "exit status 3"},
		{"apply hangs past its timeout", "apply", "hang", "300ms", "apply timed out after 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &testHook{name: "flaky", timeout: tt.timeout}
			th := startHost(t, h)
			peers := sdktest.Peers(4)
			th.Update(peers)
			testkit.Eventually(t, waitTimeout, "a first good apply", testkit.True(func() bool { return lastApply(th.calls(t, "flaky"), 0) != nil }))

			hooktest.Misbehave(t, h.dir, tt.op, tt.act, "no table 100")
			th.Update(peers[:3]) // wakes the hook; a failed configure needs a restart first
			if tt.op == "configure" {
				syscall.Kill(pids(t, h.dir)[0], syscall.SIGKILL)
			}
			testkit.Eventually(t, waitTimeout, "two failures", testkit.True(func() bool { return th.failures("flaky") >= 2 }))
			if !th.logs.Contains(tt.logged) {
				t.Errorf("log does not name the failure %q", tt.logged)
			}
			hooktest.Behave(t, h.dir, tt.op, tt.act)

			var good *hooktest.Call
			testkit.Eventually(t, waitTimeout, "a restarted process to take the full state", testkit.True(func() bool {
				ps := pids(t, h.dir)
				good = lastApply(th.calls(t, "flaky"), ps[len(ps)-1])
				return len(ps) >= 3 && good != nil
			}))
			if diff := cmp.Diff(sdk.Diff(nil, peers[:3]), *good.Change, cmpNet); diff != "" {
				t.Errorf("restarted hook's first apply is not the full state (-want +got):\n%s", diff)
			}
			testkit.Eventually(t, waitTimeout, "up again", testkit.True(func() bool { return th.up("flaky") == 1 }))
			if th.restarts("flaky") < 2 {
				t.Errorf("restarts = %v, want ≥ 2", th.restarts("flaky"))
			}
			ps := pids(t, h.dir)
			for _, pid := range ps[:len(ps)-1] {
				if hooktest.Alive(pid) {
					t.Errorf("failed hook process %d is still running", pid)
				}
			}
		})
	}
}

// kill -9 of an idle hook is noticed without any update, and the new process
// gets the full state.
func TestKilledHookIsRestarted(t *testing.T) {
	th := startHost(t, &testHook{name: "rec"})
	peers := sdktest.Peers(3)
	th.Update(peers)
	testkit.Eventually(t, waitTimeout, "first apply", testkit.True(func() bool { return lastApply(th.calls(t, "rec"), 0) != nil }))
	first := pids(t, th.hooks["rec"].dir)[0]
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var again *hooktest.Call
	testkit.Eventually(t, waitTimeout, "a new process with the full state", testkit.True(func() bool {
		ps := pids(t, th.hooks["rec"].dir)
		again = lastApply(th.calls(t, "rec"), ps[len(ps)-1])
		return len(ps) == 2 && again != nil
	}))
	if diff := cmp.Diff(sdk.Diff(nil, peers), *again.Change, cmpNet); diff != "" {
		t.Errorf("restarted hook's apply (-want +got):\n%s", diff)
	}
	if th.failures("rec") != 1 || th.restarts("rec") != 1 {
		t.Errorf("failures = %v, restarts = %v; want 1, 1", th.failures("rec"), th.restarts("rec"))
	}
	if !th.logs.Contains("signal: killed") {
		t.Error("the log does not say how the hook died")
	}
}

// A hook stuck in a call holds up neither Update nor the other hooks, which
// see every state in order; when the host stops, the stuck hook is killed.
func TestHungHookDoesNotBlockOthers(t *testing.T) {
	stuck := &testHook{name: "stuck", timeout: "1h"}
	th := startHost(t, stuck, &testHook{name: "fast"})
	th.Update(sdktest.Peers(1))
	testkit.Eventually(t, waitTimeout, "both hooks' first apply", testkit.True(func() bool {
		return lastApply(th.calls(t, "stuck"), 0) != nil && lastApply(th.calls(t, "fast"), 0) != nil
	}))
	hooktest.Misbehave(t, stuck.dir, "apply", "hang", "")
	for n := 2; n <= 6; n++ {
		th.Update(sdktest.Peers(n))
		testkit.Eventually(t, waitTimeout, fmt.Sprintf("fast to apply %d peers", n), testkit.True(func() bool {
			c := lastApply(th.calls(t, "fast"), 0)
			return c != nil && len(c.Change.Peers) == n
		}))
	}
	// fast saw the states in order, never an older one after a newer.
	last := 0
	for _, c := range th.calls(t, "fast") {
		if c.Op == "apply" {
			if len(c.Change.Peers) < last {
				t.Errorf("fast applied %d peers after %d", len(c.Change.Peers), last)
			}
			last = len(c.Change.Peers)
		}
	}
	if c := th.calls(t, "stuck"); c[len(c)-1].Act != "hang" || th.failures("stuck") != 0 {
		t.Fatalf("stuck hook: last call %+v, failures %v; want a hanging apply, no failure yet", c[len(c)-1], th.failures("stuck"))
	}
	th.stop(t) // Cleanup checks that every process is gone
	if !th.logs.Contains(`msg="hook stopped" hook=stuck`) || !th.logs.Contains(`msg="hook stopped" hook=fast`) {
		t.Error("not every hook was stopped")
	}
}

// When the host stops, a hook gets the newest state, then Stop, and its
// process is gone by the time Run returns.
func TestStopDeliversLastStateThenStops(t *testing.T) {
	th := startHost(t, &testHook{name: "a"}, &testHook{name: "b"})
	th.Update(sdktest.Peers(2))
	testkit.Eventually(t, waitTimeout, "first applies", testkit.True(func() bool {
		return lastApply(th.calls(t, "a"), 0) != nil && lastApply(th.calls(t, "b"), 0) != nil
	}))
	th.Update(sdktest.Peers(5))
	th.stop(t)
	for _, name := range []string{"a", "b"} {
		calls := th.calls(t, name)
		n := len(calls)
		if n < 2 || calls[n-1].Op != "stop" || calls[n-2].Op != "apply" || len(calls[n-2].Change.Peers) != 5 {
			t.Errorf("hook %s: calls end with %+v, want apply(5 peers), stop", name, calls[max(0, n-2):])
		}
		for _, pid := range pids(t, th.hooks[name].dir) {
			if hooktest.Alive(pid) {
				t.Errorf("hook %s: process %d alive after Run returned", name, pid)
			}
		}
	}
}

// A pinned hash is checked before the hook runs: the right one starts it,
// a wrong one never lets it run and the log names the file and both hashes.
func TestPinnedHash(t *testing.T) {
	sum := fileSHA256(t, recorderPath)
	wrong := strings.Repeat("ab", 32)
	tests := []struct {
		name, pin string
		starts    bool
	}{
		{"matching pin", sum, true},
		{"no pin", "", true},
		{"wrong pin", wrong, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &testHook{name: "pinned", sha256: tt.pin}
			th := startHost(t, h)
			th.Update(sdktest.Peers(1))
			if tt.starts {
				testkit.Eventually(t, waitTimeout, "the hook to run", testkit.True(func() bool { return lastApply(th.calls(t, "pinned"), 0) != nil }))
				return
			}
			testkit.Eventually(t, waitTimeout, "two refused starts", testkit.True(func() bool { return th.failures("pinned") >= 2 }))
			if calls := th.calls(t, "pinned"); len(calls) != 0 {
				t.Fatalf("a hook with the wrong hash ran: %+v", calls)
			}
			for _, s := range []string{recorderPath, sum, wrong} {
				if !th.logs.Contains(s) {
					t.Errorf("log does not name %s", s)
				}
			}
			if th.up("pinned") != 0 {
				t.Error("ikto_hook_up = 1 for a refused hook")
			}
		})
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
