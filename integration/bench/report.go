package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Stat names the statistic a target is held to.
type Stat string

// The statistics of a Summary a target can name.
const (
	StatMedian Stat = "median"
	StatP99    Stat = "p99"
	StatMax    Stat = "max"
	StatMin    Stat = "min"
)

// Target is a goal from the issue: Stat Op Value, e.g. p99 <= 50 (ms).
type Target struct {
	Stat  Stat    `json:"stat"`
	Op    string  `json:"op"` // "<=" or ">="
	Value float64 `json:"value"`
}

// AtMost is the target "stat <= v".
func AtMost(stat Stat, v float64) *Target { return &Target{Stat: stat, Op: "<=", Value: v} }

// AtLeast is the target "stat >= v".
func AtLeast(stat Stat, v float64) *Target { return &Target{Stat: stat, Op: ">=", Value: v} }

func (t *Target) met(s Summary) bool {
	var v float64
	switch t.Stat {
	case StatP99:
		v = s.P99
	case StatMax:
		v = s.Max
	case StatMin:
		v = s.Min
	default:
		v = s.Median
	}
	if t.Op == ">=" {
		return v >= t.Value
	}
	return v <= t.Value
}

// Figure is one line of the table.
type Figure struct {
	Scenario string `json:"scenario"`
	Name     string `json:"name"`
	Unit     string `json:"unit"`
	Summary
	Target *Target `json:"target,omitempty"`
	// Met is set when there is a target.
	Met *bool `json:"met,omitempty"`
	// Reference is ikto 0.3.0's figure, where the issue gives one.
	Reference string `json:"reference,omitempty"`
	Note      string `json:"note,omitempty"`
}

// NewFigure summarizes samples and checks the target, if any.
func NewFigure(scenario, name, unit string, samples []float64, target *Target) Figure {
	f := Figure{Scenario: scenario, Name: name, Unit: unit, Summary: Summarize(samples), Target: target}
	if target != nil && f.Samples > 0 {
		met := target.met(f.Summary)
		f.Met = &met
	}
	return f
}

// Machine describes where the suite ran, so a reader can judge the figures.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	MemTotal  string `json:"mem_total"`
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

// Report is the whole run: what bench/results.json holds.
type Report struct {
	Mode     string    `json:"mode"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"duration_seconds"`
	Machine  Machine   `json:"machine"`
	Figures  []Figure  `json:"figures"`
	Failures []string  `json:"failures,omitempty"`
}

// NewReport starts a report and notes the machine's state.
func NewReport(mode string) *Report {
	return &Report{
		Mode:    mode,
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: Machine{
			CPUs:      runtime.NumCPU(),
			GoVersion: runtime.Version(),
			Kernel:    readTrimmed("/proc/sys/kernel/osrelease"),
			MemTotal:  memTotal(),
			LoadStart: readTrimmed("/proc/loadavg"),
		},
	}
}

// Add appends figures.
func (r *Report) Add(fs ...Figure) { r.Figures = append(r.Figures, fs...) }

// Fail records a scenario that could not complete.
func (r *Report) Fail(scenario string, err error) {
	r.Failures = append(r.Failures, scenario+": "+err.Error())
}

// Finish notes the end of the run.
func (r *Report) Finish() {
	r.Seconds = time.Since(r.Started).Round(time.Second).Seconds()
	r.Machine.LoadEnd = readTrimmed("/proc/loadavg")
}

// WriteJSON writes the report to path, creating its directory.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteTable prints the figures as one table, then the machine and any
// failures.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tMEDIAN\tP99\tMIN..MAX\tRUNS\tTARGET\tMET\t0.3.0")
	for _, f := range r.Figures {
		target, met := "", ""
		if f.Target != nil {
			target = fmt.Sprintf("%s %s %s", f.Target.Stat, f.Target.Op, formatValue(f.Target.Value, f.Unit))
		}
		if f.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*f.Met]
		}
		if f.Samples == 0 { // not measured (see its note)
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t0\t%s\t%s\t%s\n", f.Scenario, f.Name, target, met, f.Reference)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s..%s\t%d\t%s\t%s\t%s\n", f.Scenario, f.Name,
			formatValue(f.Median, f.Unit), formatValue(f.P99, f.Unit),
			formatNumber(f.Min), formatNumber(f.Max), f.Samples, target, met, f.Reference)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	m := r.Machine
	fmt.Fprintf(w, "\n%s run, %.0fs, %d CPUs, %s, kernel %s, memory %s; load average at start %s, at end %s\n",
		r.Mode, r.Seconds, m.CPUs, m.GoVersion, m.Kernel, m.MemTotal, m.LoadStart, m.LoadEnd)
	for _, f := range r.Figures {
		if f.Note != "" {
			fmt.Fprintf(w, "note: %s: %s\n", f.Name, f.Note)
		}
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	return nil
}

func formatValue(v float64, unit string) string {
	return formatNumber(v) + " " + unit
}

// formatNumber keeps three significant digits, enough for noisy figures.
func formatNumber(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func memTotal() string {
	for _, line := range strings.Split(readTrimmed("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
