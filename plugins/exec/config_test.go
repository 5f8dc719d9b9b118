package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    config
		wantErr string // a substring of the error; "" for none
	}{
		{name: "argv", raw: `{"command": ["/usr/bin/logger", "-t", "ikto"]}`,
			want: config{Argv: []string{"/usr/bin/logger", "-t", "ikto"}, Timeout: 10 * time.Second}},
		{name: "shell line", raw: `{"command": "jq -c .added | logger", "timeout": "2.5s"}`,
			want: config{Argv: []string{"/bin/sh", "-c", "jq -c .added | logger"}, Timeout: 2500 * time.Millisecond}},
		{name: "absent", raw: "", wantErr: `set "command"`},
		{name: "no command", raw: `{"timeout": "1s"}`, wantErr: "command: missing"},
		{name: "empty line", raw: `{"command": "  "}`, wantErr: "command: empty shell command line"},
		{name: "empty argv", raw: `{"command": []}`, wantErr: "command: empty argv"},
		{name: "empty program", raw: `{"command": [""]}`, wantErr: "command: empty argv"},
		{name: "not strings", raw: `{"command": [1, 2]}`, wantErr: "command: neither a string nor an array of strings"},
		{name: "bad timeout", raw: `{"command": "true", "timeout": "10"}`, wantErr: `timeout: "10" is not a positive Go duration`},
		{name: "zero timeout", raw: `{"command": "true", "timeout": "0s"}`, wantErr: `timeout: "0s"`},
		{name: "unknown key", raw: `{"command": "true", "args": []}`, wantErr: `unknown field "args"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig(%s) error = %v, want one containing %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%s): %v", tt.raw, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseConfig(%s) (-want +got):\n%s", tt.raw, diff)
			}
		})
	}
}

// Configure finds the program as the command will (in the command's PATH),
// so a missing or non-executable one fails at start-up.
func TestConfigureChecksProgram(t *testing.T) {
	dir := t.TempDir()
	notExec := script(t, dir, "plain.sh", "exit 0")
	if err := os.Chmod(notExec, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		command any
		wantErr string
	}{
		{"absolute", []string{script(t, dir, "ok.sh", "exit 0")}, ""},
		{"in PATH", []string{"sh", "-c", "true"}, ""},
		{"shell line", "no-such-program-here", ""}, // /bin/sh exists; the line is its business
		{"missing", []string{dir + "/missing.sh"}, "missing.sh"},
		{"not executable", []string{notExec}, "permission denied"},
		{"not in PATH", []string{"no-such-program-here"}, "not found in PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHook(t)
			err := h.Configure(t.Context(), testNode(configJSON(t, tt.command, "")))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Configure: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Configure: err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
