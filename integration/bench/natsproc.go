package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
)

// The environment of a re-executed bench binary: which role it plays, and
// for the NATS role where it keeps its store.
const (
	childEnv     = "IKTO_BENCH_CHILD"
	natsStoreEnv = "IKTO_BENCH_NATS_STORE"
	roleNATS     = "nats-server"
)

// RunChild plays the role the environment names, if any, and reports whether
// it did; main (or TestMain) calls it first and exits when handled is true.
//
// The propagation scenario holds up to 10,000 client connections; with the
// server in the same process each would cost two descriptors, and the hard
// limit here is 20,000. So the embedded nats-server (the same library and
// version the harness embeds) runs in a child copy of the bench binary, on
// loopback.
func RunChild() (handled bool, err error) {
	switch role := os.Getenv(childEnv); role {
	case "":
		return false, nil
	case roleNATS:
		return true, serveNATS(os.Getenv(natsStoreEnv), os.Stdin, os.Stdout)
	default:
		return true, fmt.Errorf("%s=%q: unknown role", childEnv, role)
	}
}

// natsReady bounds how long the child may take to announce its server.
const natsReady = 15 * time.Second

// serveNATS runs a JetStream server on 127.0.0.1 and a free port, prints its
// URL on one line, and serves until stdin ends (the parent closed it or died)
// or a SIGTERM.
func serveNATS(storeDir string, stdin io.Reader, stdout io.Writer) error {
	if storeDir == "" {
		return fmt.Errorf("%s is not set", natsStoreEnv)
	}
	srv, err := natsserver.Start(natsserver.Options{
		ServerName: "ikto-bench",
		StoreDir:   storeDir,
		// Default JetStream limits (1,000 consumers per stream): agents
		// follow the bucket with a subscription, not a consumer each.
	})
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	defer srv.Shutdown()
	if _, err := fmt.Fprintln(stdout, srv.URL()); err != nil {
		return fmt.Errorf("announce nats-server: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}

// NATSProcess is an embedded nats-server in a child process.
type NATSProcess struct {
	URL   string
	PID   int
	cmd   *exec.Cmd
	stdin io.Closer
	done  chan struct{}
}

// StartNATSProcess re-executes this binary as a NATS server with its store
// in dir and waits until it announces its URL.
func StartNATSProcess(ctx context.Context, dir string) (*NATSProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+roleNATS, natsStoreEnv+"="+dir)
	cmd.Stderr = os.Stderr
	// The kernel kills the server should this process die without Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	p := &NATSProcess{PID: cmd.Process.Pid, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case p.URL = <-line:
	case <-time.After(natsReady):
	case <-ctx.Done():
	}
	if !strings.HasPrefix(p.URL, "nats://") {
		return nil, errors.Join(fmt.Errorf("nats-server (pid %d) did not announce its URL", p.PID), p.Close())
	}
	return p, nil
}

// closeGrace is how long Close waits for the server to stop before SIGKILL.
const closeGrace = 10 * time.Second

// Close stops the server (stdin closed, then SIGKILL by PID after a grace
// period) and waits until it is gone.
func (p *NATSProcess) Close() error {
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(closeGrace):
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop nats-server (pid %d): %w", p.PID, err)
	}
	<-p.done
	return nil
}

// CPUTime is the CPU time the server has used so far.
func (p *NATSProcess) CPUTime() (time.Duration, error) { return ProcessCPU(p.PID) }

// ProcessCPU sums the time every thread of pid has spent on a CPU, from
// /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts in 10 ms
// ticks, too coarse for an idle agent).
func ProcessCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: schedstat %q: %w", pid, b, err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}
