package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted on purpose
	}
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{Samples: 1, Median: 7, P99: 7, Min: 7, Max: 7}},
		{"odd", []float64{3, 1, 2}, Summary{Samples: 3, Median: 2, P99: 3, Min: 1, Max: 3}},
		{"even takes the mean of the middle two", []float64{4, 1, 3, 2}, Summary{Samples: 4, Median: 2.5, P99: 4, Min: 1, Max: 4}},
		{"p99 of 100 is the 99th", hundred, Summary{Samples: 100, Median: 50.5, P99: 99, Min: 1, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.in...)
			if diff := cmp.Diff(tt.want, Summarize(tt.in)); diff != "" {
				t.Fatalf("Summarize (-want +got):\n%s", diff)
			}
			if !cmp.Equal(in, tt.in) {
				t.Fatal("Summarize reordered its input")
			}
		})
	}
}

func TestTargets(t *testing.T) {
	s := Summary{Samples: 3, Median: 10, P99: 40, Min: 5, Max: 40}
	tests := []struct {
		target *Target
		met    bool
	}{
		{AtMost(StatMedian, 10), true},
		{AtMost(StatMedian, 9.9), false},
		{AtMost(StatP99, 50), true},
		{AtMost(StatP99, 39), false},
		{AtMost(StatMax, 40), true},
		{AtLeast(StatMin, 5), true},
		{AtLeast(StatMedian, 11), false},
	}
	for _, tt := range tests {
		if got := tt.target.met(s); got != tt.met {
			t.Errorf("%s %s %v on %+v = %v, want %v", tt.target.Stat, tt.target.Op, tt.target.Value, s, got, tt.met)
		}
	}
	if f := NewFigure("x", "no samples", "ms", nil, AtMost(StatMedian, 1)); f.Met != nil {
		t.Error("a figure without samples claims a verdict")
	}
}

func TestReportJSONAndTable(t *testing.T) {
	r := NewReport("test")
	r.Add(
		NewFigure("propagation", "N=1,000: put → applied on every agent", "ms", []float64{10, 20, 60}, AtMost(StatP99, 50)),
		NewFigure("data plane", "ikto / hand-configured wireguard-go", "ratio", []float64{1.2}, AtLeast(StatMedian, 0.9)).withRef("n/a"),
	)
	r.Fail("mesh", errors.New("boom"))
	r.Finish()
	path := filepath.Join(t.TempDir(), "sub", "results.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, &back); diff != "" {
		t.Fatalf("JSON round trip (-wrote +read):\n%s", diff)
	}
	if back.Figures[0].Met == nil || *back.Figures[0].Met || !*back.Figures[1].Met {
		t.Fatalf("verdicts = %v, %v; want missed, met", back.Figures[0].Met, back.Figures[1].Met)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SCENARIO", "N=1,000: put → applied on every agent", "p99 <= 50.0 ms", "NO", "yes", "FAILED: mesh: boom"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{{1234.5, "1234"}, {42.25, "42.2"}, {3.14159, "3.14"}, {0.05414, "0.0541"}, {0, "0"}}
	for _, tt := range tests {
		if got := formatNumber(tt.v); got != tt.want {
			t.Errorf("formatNumber(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
	if got := thousands(10000); got != "10,000" {
		t.Errorf("thousands(10000) = %q", got)
	}
	if got := Millis([]time.Duration{1500 * time.Microsecond}); got[0] != 1.5 {
		t.Errorf("Millis = %v", got)
	}
}
