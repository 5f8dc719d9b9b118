package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// defaultTimeout bounds one run of the command when the config gives none.
const defaultTimeout = 10 * time.Second

// shell runs a command given as one string.
var shell = []string{"/bin/sh", "-c"}

// config is the hook's own "config" object in the agent's hooks list:
//
//	{"command": ["/usr/local/bin/on-mesh-change", "--quiet"], "timeout": "5s"}
//	{"command": "logger -t ikto \"$(jq -c .added)\""}
type config struct {
	// Argv is the command: the array as given, or a string run by /bin/sh -c.
	Argv []string
	// Timeout bounds one run; the process group is killed when it passes.
	Timeout time.Duration
}

// parseConfig decodes and validates raw. Unknown keys are an error that
// names them, as in the agent's own config.
func parseConfig(raw json.RawMessage) (config, error) {
	var in struct {
		Command json.RawMessage `json:"command"`
		Timeout string          `json:"timeout"`
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return config{}, errors.New("exec hook config: missing; set \"command\"")
	}
	if err := sdk.DecodeConfig(raw, &in); err != nil {
		return config{}, fmt.Errorf("exec hook config: %w", err)
	}
	argv, err := parseCommand(in.Command)
	if err != nil {
		return config{}, fmt.Errorf("exec hook config: command: %w", err)
	}
	cfg := config{Argv: argv, Timeout: defaultTimeout}
	if in.Timeout != "" {
		d, err := time.ParseDuration(in.Timeout)
		if err != nil || d <= 0 {
			return config{}, fmt.Errorf("exec hook config: timeout: %q is not a positive Go duration such as \"10s\"", in.Timeout)
		}
		cfg.Timeout = d
	}
	return cfg, nil
}

// parseCommand accepts an argv array or a shell command line.
func parseCommand(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("missing; give an argv array such as [\"/usr/local/bin/hook\"] or a shell command line")
	}
	var line string
	if err := json.Unmarshal(raw, &line); err == nil {
		if strings.TrimSpace(line) == "" {
			return nil, errors.New("empty shell command line")
		}
		return append(append([]string{}, shell...), line), nil
	}
	var argv []string
	if err := json.Unmarshal(raw, &argv); err != nil {
		return nil, errors.New("neither a string nor an array of strings")
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("empty argv; its first element is the program to run")
	}
	return argv, nil
}

// lookPath resolves the program name the way a shell would, but in the
// PATH of the command's environment: the hook process itself may have been
// started with no PATH at all.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("program %s: %w", name, err)
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue // an empty entry would mean the hook's working directory
		}
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("program %s: not found in PATH=%s; give its absolute path", name, pathEnv)
}
