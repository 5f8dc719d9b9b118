package kernellane

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Plan is what the host tells the guest to run, as JSON in the share.
type Plan struct {
	// Suites run one after the other.
	Suites []Suite `json:"suites"`
	// Env is added to every suite's environment.
	Env []string `json:"env"`
}

// Suite is one compiled test binary and the tests of it the lane expects to
// pass.
type Suite struct {
	Name   string   `json:"name"`   // also the log's name: out/NAME.log
	Binary string   `json:"binary"` // path in the guest
	Tests  []string `json:"tests"`  // top-level tests; each must PASS
	// Timeout is the binary's -test.timeout: its own panic names the stuck
	// test before the host's deadline kills the machine.
	Timeout time.Duration `json:"timeout"`
	// Parallel is -test.parallel; 0 keeps the default (GOMAXPROCS).
	Parallel int `json:"parallel,omitempty"`
}

// Args are the test binary's arguments.
func (s Suite) Args() []string {
	args := []string{"-test.v", "-test.count=1", "-test.run", RunPattern(s.Tests), "-test.timeout", s.Timeout.String()}
	if s.Parallel > 0 {
		args = append(args, fmt.Sprintf("-test.parallel=%d", s.Parallel))
	}
	return args
}

// RunPattern is the -test.run pattern matching exactly the named top-level
// tests (and their subtests).
func RunPattern(tests []string) string {
	p := "^("
	for i, t := range tests {
		if i > 0 {
			p += "|"
		}
		p += t
	}
	return p + ")$"
}

// GuestResult is what the guest writes back: out/result.json.
type GuestResult struct {
	Kernel string        `json:"kernel"` // uname -r inside the guest
	Suites []SuiteResult `json:"suites"`
}

// SuiteResult is how one test binary ended.
type SuiteResult struct {
	Name     string        `json:"name"`
	ExitCode int           `json:"exit_code"`
	Err      string        `json:"err,omitempty"` // it could not be run at all
	Duration time.Duration `json:"duration"`
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
