package kernellane

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// failureLines bounds what is printed of one failed scenario's output.
const failureLines = 150

// report prints the kernel the guest ran, every expected scenario's result
// and, for each failure, its output; then the closing count. A scenario
// that skipped or never reported counts as failed.
func report(o Options, work string, plan Plan, expected map[string][]string, accel string, took time.Duration) (bool, error) {
	var res GuestResult
	if err := readJSON(filepath.Join(work, "out", "result.json"), &res); err != nil {
		tail, _ := os.ReadFile(filepath.Join(work, "console.log"))
		return false, fmt.Errorf("no results from the guest: %w\nlast console lines:\n%s", err, lastLines(string(tail), 30))
	}
	fmt.Fprintf(o.Out, "ikto-lane: kernel %s (%s), %s from boot to power-off\n", res.Kernel, accel, took.Round(time.Second))
	passed, failed := 0, 0
	for _, s := range plan.Suites {
		sr := suiteResult(res, s.Name)
		log, _ := os.ReadFile(filepath.Join(work, "out", s.Name+".log"))
		results, output := ParseTestLog(string(log))
		suiteFailed := 0
		for _, r := range Outcome(expected[s.Name], results) {
			status := r.Status
			if status == "" {
				status = "NOT RUN"
			}
			fmt.Fprintf(o.Out, "  %-8s %-40s %7s  (%s)\n", status, r.Name, r.Duration.Round(100*time.Millisecond), s.Name)
			if r.Status == "PASS" {
				passed++
				continue
			}
			failed++
			suiteFailed++
			if out := output[r.Name]; len(out) > 0 {
				fmt.Fprintf(o.Out, "---- %s, its own lines:\n%s\n---- end of its output:\n%s\n----\n", r.Name,
					strings.Join(ownLines(out), "\n"), lastLines(strings.Join(out, "\n"), failureLines))
			}
		}
		for _, l := range strings.Split(string(log), "\n") {
			if _, fig, ok := strings.Cut(l, FigureMarker); ok {
				fmt.Fprintf(o.Out, "           %s%s\n", FigureMarker, fig)
			}
		}
		// A binary that failed without a failed scenario (a panic between
		// tests, a crash at exit) still fails the lane.
		if sr.Err != "" || (sr.ExitCode != 0 && suiteFailed == 0) {
			failed++
			fmt.Fprintf(o.Out, "  suite %s ended with exit %d %s; end of its log:\n%s\n", s.Name, sr.ExitCode, sr.Err, lastLines(string(log), 40))
		}
	}
	fmt.Fprintf(o.Out, "kernel-lane: %d passed, %d failed\n", passed, failed)
	return failed == 0, nil
}

// testLine is a line a test logged itself (t.Log, t.Error: "file_test.go:N:"),
// as opposed to the agent logs a failing scenario prints after them.
var testLine = regexp.MustCompile(`^\s+\S+_test\.go:\d+: `)

// ownLines are the test's own lines of out, at most failureLines.
func ownLines(out []string) []string {
	var own []string
	for _, l := range out {
		if testLine.MatchString(l) {
			own = append(own, l)
		}
	}
	if len(own) > failureLines {
		own = own[len(own)-failureLines:]
	}
	return own
}

func suiteResult(res GuestResult, name string) SuiteResult {
	for _, s := range res.Suites {
		if s.Name == name {
			return s
		}
	}
	return SuiteResult{Name: name, ExitCode: -1, Err: "did not run"}
}
