package childproc_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/childproc"
)

func TestStartReportsTheExit(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 3")
	exited := make(chan error, 1)
	if err := childproc.Start(cmd, func(err error) { exited <- err }); err != nil {
		t.Fatal(err)
	}
	if cmd.Process == nil || cmd.Process.Pid <= 0 {
		t.Fatalf("Start returned before cmd.Process was set: %+v", cmd.Process)
	}
	select {
	case err := <-exited:
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 3 {
			t.Errorf("exited(%v), exit code %d; want an ExitError and 3", err, code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exited was not called")
	}
}

func TestStartFails(t *testing.T) {
	cmd := exec.Command("/nonexistent/ikto-childproc-test")
	called := make(chan struct{}, 1)
	if err := childproc.Start(cmd, func(error) { called <- struct{}{} }); err == nil {
		t.Fatal("Start of a missing program: no error")
	}
	select {
	case <-called:
		t.Error("exited was called for a process that never started")
	default:
	}
}

// A child started in a namespace is in it; a missing namespace is an error.
func TestStartInEntersTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("needs root to make a network namespace (IKTO_REQUIRE_INTEGRATION=1)")
		}
		t.Skip("needs root to make a network namespace")
	}
	name := fmt.Sprintf("ikto-childproc-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command("readlink", "/proc/self/ns/net")
	cmd.Stdout = &out
	exited := make(chan error, 1)
	if err := childproc.StartIn("/run/netns/"+name, cmd, func(err error) { exited <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(out.String())
	if got == "" || got == want {
		t.Errorf("child's network namespace %q; want one other than this process's %q", got, want)
	}
	if err := childproc.StartIn("/run/netns/ikto-no-such-namespace", exec.Command("true"), func(error) {}); err == nil {
		t.Error("StartIn of a missing namespace: no error")
	}
}
