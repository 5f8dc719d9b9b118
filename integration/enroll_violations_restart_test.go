package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// natsRestarter returns how to restart the world's server: the embedded
// one restarts on its port and store; Debian's is killed by PID and run
// again with its configuration file, which keeps its port, store, resolver
// directory and log.
func (c *churn) natsRestarter() func(stopped func()) {
	switch s := c.w.srv.(type) {
	case *harness.ConfNATS:
		return func(stopped func()) {
			s.Shutdown()
			stopped()
			if err := s.Start(); err != nil {
				c.t.Fatal(err)
			}
		}
	case *harness.NATSProcess:
		stop := s.Close
		return func(stopped func()) {
			if err := stop(); err != nil {
				c.t.Fatal(err)
			}
			stopped()
			p, err := rerunNATSProcess(s)
			if err != nil {
				c.t.Fatal(err)
			}
			// The world's handle now names the running server, so the
			// cleanup that startDebianNATS registered kills this one by
			// PID, and no cleanup kills a PID that has been reaped.
			s.PID, stop = p.pid, p.kill
		}
	}
	c.t.Fatalf("cannot restart a %T", c.w.srv)
	return nil
}

// rerun is a nats-server process started again by rerunNATSProcess.
type rerun struct {
	pid  int
	done chan struct{}
}

// rerunNATSProcess runs Debian's nats-server again with first's
// configuration file and log, and waits until it accepts clients.
func rerunNATSProcess(first *harness.NATSProcess) (*rerun, error) {
	logFile, err := os.OpenFile(first.LogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(harness.DebianNATS, "-c", filepath.Join(filepath.Dir(first.LogPath), "nats-server.conf"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r := &rerun{done: make(chan struct{})}
	started := make(chan error, 1)
	// The kernel sends Pdeathsig when the thread that forked the child
	// ends, and Go ends threads left locked (namespace code does that): the
	// child is forked from a thread held until it exits.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		r.pid = cmd.Process.Pid
		started <- nil
		_ = cmd.Wait()
		close(r.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s again: %w", harness.DebianNATS, err)
	}
	err = testkit.Poll(context.Background(), 15*time.Second, func(ctx context.Context) error {
		select {
		case <-r.done:
			return testkit.Permanent(fmt.Errorf("nats-server exited at start-up:\n%s", first.Log()))
		default:
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", first.Addr.String())
		if err != nil {
			return err
		}
		defer conn.Close()
		buf := make([]byte, 4)
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil || string(buf) != "INFO" {
			return fmt.Errorf("no INFO from %s (%v)", first.Addr, err)
		}
		return nil
	})
	if err != nil {
		_ = r.kill()
		return nil, err
	}
	return r, nil
}

// kill kills the process by PID, unless it has exited (its PID may be
// another process's by now), and waits for it.
func (r *rerun) kill() error {
	select {
	case <-r.done:
		return nil
	default:
	}
	err := syscall.Kill(r.pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		err = nil
	}
	<-r.done
	return err
}
