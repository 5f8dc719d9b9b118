package childproc_test

import (
	"os/exec"
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
