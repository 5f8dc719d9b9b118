// Package hooktest runs the recorder hook (./recorder) for tests of the hook
// host and the agent: it builds the binary, reads back the calls the hook
// got, and tells it to fail, hang or exit. The hook is a real plugin process
// driven over go-plugin, not a stand-in.
package hooktest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// CallsFile is where, in its directory, the recorder appends its calls.
const CallsFile = "calls.jsonl"

// Call is one call the recorder got.
type Call struct {
	Op     string      `json:"op"` // configure | apply | stop
	PID    int         `json:"pid"`
	Act    string      `json:"act,omitempty"` // "" (served), fail, hang or exit
	Node   *sdk.Node   `json:"node,omitempty"`
	Change *sdk.Change `json:"change,omitempty"`
}

// Build compiles the recorder into dir and returns the executable's path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	path, err := BuildTo(dir)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// BuildTo is Build for TestMain, where there is no testing.TB.
func BuildTo(dir string) (string, error) {
	out := filepath.Join(dir, "ikto-hook-recorder")
	cmd := exec.Command(goTool(), "build", "-o", out, "github.com/ikto-mesh/ikto/pkg/hook/hooktest/recorder")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{err: err, output: string(b)}
	}
	return out, nil
}

type buildError struct {
	err    error
	output string
}

func (e *buildError) Error() string {
	return "build the recorder hook: " + e.err.Error() + "\n" + e.output
}
func (e *buildError) Unwrap() error { return e.err }

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// Config is the recorder's hook config for a hook recording into dir.
func Config(dir string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"dir": dir})
	return b
}

// Calls is every call the recorder recorded in dir, oldest first.
func Calls(t testing.TB, dir string) []Call {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, CallsFile))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls []Call
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %q: %v", CallsFile, sc.Text(), err)
		}
		calls = append(calls, c)
	}
	return calls
}

// Misbehave makes the recorder in dir act on calls of op ("configure",
// "apply", "stop"): "fail" returns msg as the error, "hang" blocks forever,
// "exit" exits the process with status 3.
func Misbehave(t testing.TB, dir, op, act, msg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, op+"."+act), []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Behave undoes Misbehave for op and act.
func Behave(t testing.TB, dir, op, act string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, op+"."+act)); err != nil {
		t.Fatal(err)
	}
}

// Alive reports whether process pid exists and is not a zombie (an orphan
// whose parent is gone may wait as a zombie for a reaper that never comes).
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
