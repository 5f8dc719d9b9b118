package kernellane

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseTestLog(t *testing.T) {
	log := `=== RUN   TestA
=== PAUSE TestA
=== RUN   TestB
    b_test.go:10: hello from B
=== CONT  TestA
    a_test.go:5: hello from A
=== RUN   TestA/sub
    a_test.go:7: sub says
=== NAME  TestB
    b_test.go:12: B again
--- FAIL: TestB (1.50s)
--- PASS: TestA (0.25s)
    --- PASS: TestA/sub (0.10s)
=== RUN   TestC
--- SKIP: TestC (0.00s)
FAIL
`
	results, output := ParseTestLog(log)
	want := []TestResult{
		{Name: "TestB", Status: "FAIL", Duration: 1500 * time.Millisecond},
		{Name: "TestA", Status: "PASS", Duration: 250 * time.Millisecond},
		{Name: "TestC", Status: "SKIP"},
	}
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if got := strings.Join(output["TestB"], "\n"); !strings.Contains(got, "hello from B") || !strings.Contains(got, "B again") || strings.Contains(got, "from A") {
		t.Errorf("output of TestB:\n%s", got)
	}
	if got := strings.Join(output["TestA"], "\n"); !strings.Contains(got, "sub says") {
		t.Errorf("output of TestA lacks its subtest's:\n%s", got)
	}
	outcome := Outcome([]string{"TestA", "TestD"}, results)
	if outcome[0].Status != "PASS" || outcome[1].Status != "" {
		t.Errorf("outcome = %+v", outcome)
	}
}

func TestProgressLinesAndPattern(t *testing.T) {
	for line, want := range map[string]bool{
		"--- PASS: TestA (1.00s)":                true,
		"--- FAIL: TestA (1.00s)":                true,
		"    --- PASS: TestA/sub (0.10s)":        false, // subtests stay in the log
		"    x_test.go:3: figure: lost: 0 pings": true,
		"panic: test timed out after 12m30s":     true,
		"    x_test.go:9: hello":                 false,
		"=== RUN   TestA":                        false,
	} {
		if got := isProgressLine(line); got != want {
			t.Errorf("isProgressLine(%q) = %t, want %t", line, got, want)
		}
	}
	if got := RunPattern([]string{"TestA", "TestB"}); got != "^(TestA|TestB)$" {
		t.Errorf("RunPattern = %q", got)
	}
}
