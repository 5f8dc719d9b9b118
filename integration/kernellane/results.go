package kernellane

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TestResult is one top-level test as `go test -v` reported it.
type TestResult struct {
	Name     string
	Status   string // PASS, FAIL, SKIP, or "" when it never finished
	Duration time.Duration
}

var (
	resultLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	// Lines `go test -v` puts before a test's output when the test
	// producing it changes (parallel tests interleave).
	headerLine = regexp.MustCompile(`^=== (RUN|CONT|NAME|PAUSE)\s+(\S+)`)
)

// ParseTestLog reads `go test -v` output: the top-level results in the
// order they finished, and the output lines of each top-level test (its
// subtests' included), for printing the failures.
func ParseTestLog(log string) (results []TestResult, output map[string][]string) {
	output = map[string][]string{}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if m := headerLine.FindStringSubmatch(line); m != nil {
			current = topLevel(m[2])
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			secs, _ := strconv.ParseFloat(m[3], 64)
			results = append(results, TestResult{Name: m[2], Status: m[1], Duration: time.Duration(secs * float64(time.Second))})
			output[m[2]] = append(output[m[2]], line)
			continue
		}
		if current != "" {
			output[current] = append(output[current], line)
		}
	}
	return results, output
}

func topLevel(name string) string {
	top, _, _ := strings.Cut(name, "/")
	return top
}

// Outcome is one expected scenario's fate: its result if it reported one,
// else Status "" (it never ran or never finished).
func Outcome(expected []string, results []TestResult) []TestResult {
	byName := map[string]TestResult{}
	for _, r := range results {
		byName[r.Name] = r
	}
	out := make([]TestResult, 0, len(expected))
	for _, name := range expected {
		r, ok := byName[name]
		if !ok {
			r = TestResult{Name: name}
		}
		out = append(out, r)
	}
	return out
}
