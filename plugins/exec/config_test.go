package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/plugins/sdk/sdktest"
)

func TestParseConfig(t *testing.T) {
	sdktest.CheckConfigs(t, parseConfig, []sdktest.ConfigCase[config]{
		{Name: "argv", Raw: `{"command": ["/usr/bin/logger", "-t", "ikto"]}`,
			Want: config{Argv: []string{"/usr/bin/logger", "-t", "ikto"}, Timeout: 10 * time.Second}},
		{Name: "shell line", Raw: `{"command": "jq -c .added | logger", "timeout": "2.5s"}`,
			Want: config{Argv: []string{"/bin/sh", "-c", "jq -c .added | logger"}, Timeout: 2500 * time.Millisecond}},
		{Name: "absent", Raw: "", WantErr: `set "command"`},
		{Name: "no command", Raw: `{"timeout": "1s"}`, WantErr: "command: missing"},
		{Name: "empty line", Raw: `{"command": "  "}`, WantErr: "command: empty shell command line"},
		{Name: "empty argv", Raw: `{"command": []}`, WantErr: "command: empty argv"},
		{Name: "empty program", Raw: `{"command": [""]}`, WantErr: "command: empty argv"},
		{Name: "not strings", Raw: `{"command": [1, 2]}`, WantErr: "command: neither a string nor an array of strings"},
		{Name: "bad timeout", Raw: `{"command": "true", "timeout": "10"}`, WantErr: `timeout: "10" is not a positive Go duration`},
		{Name: "zero timeout", Raw: `{"command": "true", "timeout": "0s"}`, WantErr: `timeout: "0s"`},
		{Name: "unknown key", Raw: `{"command": "true", "args": []}`, WantErr: `unknown field "args"`},
	})
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
