package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// script writes an executable /bin/sh script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// configJSON is the hook config running argv with timeout ("" for default).
func configJSON(t *testing.T, command any, timeout string) json.RawMessage {
	t.Helper()
	m := map[string]any{"command": command}
	if timeout != "" {
		m["timeout"] = timeout
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testNode(config json.RawMessage) sdk.Node {
	return sdk.Node{
		Self: sdk.Peer{
			Name:      "self",
			PublicKey: "c2VsZnNlbGZzZWxmc2VsZnNlbGZzZWxmc2VsZnNlbGY=",
			Endpoint:  netip.MustParseAddrPort("[fd00::1]:51820"),
			Prefix:    netip.MustParsePrefix("fd10:1::/48"),
		},
		Mesh:         netip.MustParsePrefix("fd10::/16"),
		Device:       "wg-ikto",
		ListenPort:   51820,
		Config:       config,
		AgentVersion: "1.2.3",
	}
}

func testPeer(i int) sdk.Peer {
	return sdk.Peer{
		Name:      fmt.Sprintf("host-%d", i),
		PublicKey: fmt.Sprintf("key-%d", i),
		Endpoint:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 51820),
		Prefix:    netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, 0, byte(i)}), 48),
	}
}

// configured is an exec hook configured with config, logging into the
// returned buffer.
func configured(t *testing.T, config json.RawMessage) (*execHook, *logbuf.Buffer) {
	t.Helper()
	h, logs := newTestHook(t)
	if err := h.Configure(context.Background(), testNode(config)); err != nil {
		t.Fatalf("Configure(%s): %v", config, err)
	}
	return h, logs
}

func newTestHook(t *testing.T) (*execHook, *logbuf.Buffer) {
	t.Helper()
	logs := logbuf.New(t, "hook log")
	return newExecHook(hclog.New(&hclog.LoggerOptions{Output: logs, JSONFormat: true, Level: hclog.Debug})), logs
}

// processGone reports whether pid has exited: no longer in /proc, or a
// zombie waiting for a parent (init, in a container maybe never) to reap it.
func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X'
}

// readPIDs reads the whitespace-separated PIDs a script wrote to path.
func readPIDs(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %s: %v", path, err)
		}
		pids = append(pids, pid)
	}
	return pids
}
