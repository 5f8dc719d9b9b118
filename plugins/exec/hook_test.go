package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// The command reads the node and the change as JSON on stdin, with the
// record field names of the bucket; what it prints is logged, not passed on.
func TestApplyHandsPayloadOnStdin(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "payload.json")
	hookCmd := script(t, dir, "hook.sh", `cat > "$1"; echo "saw $(wc -c < "$1") bytes"`)
	tests := []struct {
		name    string
		command any
	}{
		{"argv", []string{hookCmd, out}},
		{"shell line", `cat > '` + out + `'; echo "saw $(wc -c < '` + out + `') bytes"`},
	}
	prev := []sdk.Peer{testPeer(2), testPeer(3)}
	moved := testPeer(3)
	moved.Endpoint = netip.AddrPortFrom(moved.Endpoint.Addr().Next(), moved.Endpoint.Port())
	next := []sdk.Peer{moved, testPeer(4)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, logs := configured(t, configJSON(t, tt.command, ""))
			stdout := captureStdout(t)
			if err := h.Apply(context.Background(), sdk.Diff(prev, next)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := stdout(); got != "" {
				t.Errorf("the command's output reached the hook's stdout: %q", got)
			}
			var got any
			if err := json.Unmarshal(mustRead(t, out), &got); err != nil {
				t.Fatalf("payload is not JSON: %v", err)
			}
			if diff := cmp.Diff(wantPayload(t), got); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
			done := logs.Entries("command finished")
			if len(done) != 1 || done[0]["status"] != "exit status 0" || !strings.HasPrefix(done[0]["stdout"].(string), "saw ") {
				t.Errorf("\"command finished\" log lines = %v, want one with status 0 and the command's stdout", done)
			}
		})
	}
}

func wantPayload(t *testing.T) any {
	t.Helper()
	const doc = `{
	  "payload_version": 1,
	  "node": {"name": "self", "public_key": "c2VsZnNlbGZzZWxmc2VsZnNlbGZzZWxmc2VsZnNlbGY=",
	    "advertise_address": "fd00::1", "wg_port": 51820, "allowed_ip": "fd10:1::/48",
	    "endpoint": "[fd00::1]:51820", "mesh_cidr": "fd10::/16", "wg_dev_name": "wg-ikto",
	    "agent_version": "1.2.3"},
	  "peers": [
	    {"name": "host-3", "public_key": "key-3", "advertise_address": "198.18.0.4", "wg_port": 51820,
	     "allowed_ip": "fd10:3::/48", "endpoint": "198.18.0.4:51820"},
	    {"name": "host-4", "public_key": "key-4", "advertise_address": "198.18.0.4", "wg_port": 51820,
	     "allowed_ip": "fd10:4::/48", "endpoint": "198.18.0.4:51820"}],
	  "added": [
	    {"name": "host-4", "public_key": "key-4", "advertise_address": "198.18.0.4", "wg_port": 51820,
	     "allowed_ip": "fd10:4::/48", "endpoint": "198.18.0.4:51820"}],
	  "updated": [
	    {"name": "host-3", "public_key": "key-3", "advertise_address": "198.18.0.4", "wg_port": 51820,
	     "allowed_ip": "fd10:3::/48", "endpoint": "198.18.0.4:51820"}],
	  "removed": [
	    {"name": "host-2", "public_key": "key-2", "advertise_address": "198.18.0.2", "wg_port": 51820,
	     "allowed_ip": "fd10:2::/48", "endpoint": "198.18.0.2:51820"}]
	}`
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A command that fails makes Apply fail with its exit status and the last
// line of its stderr, and the log has the ends of both its outputs.
func TestApplyReportsFailures(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		body       string
		wantErr    string
		wantStdout string
		wantStderr string
	}{
		{"exit status", `echo half done; echo "first problem" >&2; echo "cannot reach the thing" >&2; exit 3`,
			"exit status 3: cannot reach the thing", "half done\n", "first problem\ncannot reach the thing\n"},
		{"killed by a signal", `kill -KILL $$`, "signal: killed", "", ""},
		{"long stderr kept to its end", `head -c 100000 /dev/zero | tr '\0' x >&2; echo >&2; echo "the end" >&2; exit 1`,
			"exit status 1: the end", "", "[95913 bytes dropped] xxx"},
		{"one long line shortened in the error", `head -c 5000 /dev/zero | tr '\0' y >&2; exit 2`,
			"exit status 2: …" + strings.Repeat("y", maxErrLine), "", "[904 bytes dropped] yyy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := script(t, dir, strings.ReplaceAll(tt.name, " ", "-")+".sh", tt.body)
			h, logs := configured(t, configJSON(t, []string{cmd}, ""))
			err := h.Apply(context.Background(), sdk.Diff(nil, []sdk.Peer{testPeer(2)}))
			if err == nil || !strings.HasSuffix(err.Error(), tt.wantErr) {
				t.Fatalf("Apply: err = %v, want one ending in %q", err, tt.wantErr)
			}
			failed := logs.Entries("command failed")
			if len(failed) != 1 {
				t.Fatalf("%d \"command failed\" log lines, want 1", len(failed))
			}
			stdout, _ := failed[0]["stdout"].(string)
			stderr, _ := failed[0]["stderr"].(string)
			if stdout != tt.wantStdout {
				t.Errorf("logged stdout = %q, want %q", stdout, tt.wantStdout)
			}
			if !strings.HasPrefix(stderr, tt.wantStderr) || len(stderr) > tailLimit+64 {
				t.Errorf("logged stderr (%d bytes) = %.80q…, want it to start with %q and be at most ~%d bytes",
					len(stderr), stderr, tt.wantStderr, tailLimit)
			}
		})
	}
}

// A command that outlives its timeout, or the agent's call, is killed with
// every process of its group, and Apply says which happened.
func TestApplyKillsProcessGroup(t *testing.T) {
	tests := []struct {
		name    string
		timeout string
		// cancelled: the agent's call ends (its context is cancelled) once
		// the command is running, before the timeout.
		cancelled bool
		wantErr   string
	}{
		{"timeout", "1s", false, "timed out after"},
		{"agent call ends", "1m", true, "stopped by the agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			// The script and a child it waits for both record their PID.
			cmd := script(t, dir, "hang.sh", `sleep 60 & echo $$ $! > "$1.tmp"; mv "$1.tmp" "$1"; wait`)
			h, _ := configured(t, configJSON(t, []string{cmd, pids}, tt.timeout))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				go cancelOnceExists(ctx, cancel, pids)
			}
			err := h.Apply(ctx, sdk.Diff(nil, []sdk.Peer{testPeer(2)}))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply: err = %v, want one containing %q", err, tt.wantErr)
			}
			got := readPIDs(t, pids)
			if len(got) != 2 {
				t.Fatalf("pid file holds %v, want the script's and its child's", got)
			}
			for _, pid := range got {
				testkit.Eventually(t, 10*time.Second, "process "+strconv.Itoa(pid)+" to be killed", testkit.True(func() bool { return processGone(pid) }))
			}
		})
	}
}

// The agent's own deadline for the call bounds the run too, with room left
// for the hook to kill the command and say so before the agent gives up.
func TestApplyStopsBeforeAgentDeadline(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, dir, "slow.sh", `exec sleep 60`)
	h, _ := configured(t, configJSON(t, []string{cmd}, "1m"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := h.Apply(ctx, sdk.Diff(nil, []sdk.Peer{testPeer(2)}))
	if err == nil || !strings.Contains(err.Error(), "timed out after") {
		t.Fatalf("Apply: err = %v, want the hook's own timeout", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Apply returned after the agent's deadline: %v", ctx.Err())
	}
}

// After a successful run an Apply that changes nothing does not run the
// command; after a new Configure, or a failed run, it does.
func TestEmptyChangeRunsOnlyWhenNeeded(t *testing.T) {
	dir := t.TempDir()
	runs, fail := filepath.Join(dir, "runs"), filepath.Join(dir, "fail")
	cmd := script(t, dir, "count.sh", `echo run >> "$1"; test ! -e "$2"`)
	cfg := configJSON(t, []string{cmd, runs, fail}, "")
	h, _ := configured(t, cfg)
	peers := []sdk.Peer{testPeer(2)}
	steps := []struct {
		name      string
		configure bool
		failing   bool // the command exits 1
		change    sdk.Change
		wantRuns  int
	}{
		{"first apply", false, false, sdk.Diff(nil, peers), 1},
		{"same peers", false, false, sdk.Diff(peers, peers), 1},
		{"reconfigured", true, false, sdk.Diff(peers, peers), 2},
		{"reconfigured, failing", true, true, sdk.Diff(peers, peers), 3},
		{"retry after failure", false, false, sdk.Diff(peers, peers), 4},
		{"same peers again", false, false, sdk.Diff(peers, peers), 4},
	}
	for _, s := range steps {
		if s.configure {
			if err := h.Configure(context.Background(), testNode(cfg)); err != nil {
				t.Fatalf("%s: Configure: %v", s.name, err)
			}
		}
		if s.failing {
			if err := os.WriteFile(fail, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Remove(fail); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := h.Apply(context.Background(), s.change); (err != nil) != s.failing {
			t.Fatalf("%s: Apply: err = %v, want failure %v", s.name, err, s.failing)
		}
		if got := strings.Count(string(mustRead(t, runs)), "run\n"); got != s.wantRuns {
			t.Fatalf("after %s: %d runs, want %d", s.name, got, s.wantRuns)
		}
	}
}

// cancelOnceExists cancels once path exists, or after a while in any case
// (the test then fails on what the script did not write).
func cancelOnceExists(ctx context.Context, cancel context.CancelFunc, path string) {
	defer cancel()
	_ = testkit.Poll(ctx, 30*time.Second, func(context.Context) error {
		if !fileExists(path) {
			return errors.New(path + " not written yet")
		}
		return nil
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// captureStdout points os.Stdout at a pipe until the returned function is
// called, which gives back what was written there.
func captureStdout(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stdout
	os.Stdout = w
	t.Cleanup(func() { os.Stdout = orig })
	return func() string {
		os.Stdout = orig
		w.Close()
		b, _ := io.ReadAll(r)
		r.Close()
		return string(b)
	}
}
