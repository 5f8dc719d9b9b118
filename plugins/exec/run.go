package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

const (
	// tailLimit bounds how much of the command's stdout and of its stderr is
	// kept for the log: the end is where the error usually is.
	tailLimit = 4 << 10
	// maxErrLine bounds the stderr line quoted in Apply's error.
	maxErrLine = 200
	// waitDelay is how long a run waits, after the command exited or was
	// killed, for processes it left behind to close its output.
	waitDelay = 2 * time.Second
	// hostMargin is kept free before the agent's own deadline for the call,
	// so the hook kills the command and reports a timeout before the agent
	// gives up on the hook and kills the hook process instead, which would
	// leave the command's process group running.
	hostMargin = 500 * time.Millisecond
	// defaultPath is used when the hook was started without PATH (the agent
	// starts hooks with a clean environment).
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// result is what one run of the command did.
type result struct {
	status   string // "exit status 0", "signal: killed", or "" when it did not start
	duration time.Duration
	stdout   string // the end of its standard output
	stderr   string // the end of its standard error
}

// runCommand runs argv with stdin as its standard input in a process group
// of its own, and kills the whole group when timeout (or the caller's
// deadline, less hostMargin) passes. Its output goes to bounded buffers,
// never to the hook's own stdout, which belongs to go-plugin.
func runCommand(ctx context.Context, argv []string, stdin []byte, timeout time.Duration) (result, error) {
	env := commandEnv()
	path, err := lookPath(argv[0], envValue(env, "PATH"))
	if err != nil {
		return result{}, err
	}
	runCtx, cancel := context.WithDeadline(ctx, runDeadline(ctx, timeout))
	defer cancel()
	var stdout, stderr tailBuffer
	cmd := exec.CommandContext(runCtx, path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Pdeathsig kills the command if the hook dies mid-run; it follows the
	// thread that started the child, so the thread is held until Wait.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	err = cmd.Run()
	res := result{duration: time.Since(start), stdout: stdout.String(), stderr: stderr.String()}
	if cmd.ProcessState != nil {
		res.status = cmd.ProcessState.String()
	}
	return res, runError(ctx, runCtx, err, res)
}

// runDeadline is when a run must end: after timeout, or hostMargin before
// the caller's deadline when that comes first and leaves room for it.
func runDeadline(ctx context.Context, timeout time.Duration) time.Time {
	now := time.Now()
	deadline := now.Add(timeout)
	if d, ok := ctx.Deadline(); ok {
		if early := d.Add(-hostMargin); early.Before(deadline) && early.After(now) {
			deadline = early
		}
	}
	return deadline
}

// runError says why a run failed, or nil if it succeeded. Processes the
// command left behind holding its output (exec.ErrWaitDelay) do not make a
// successful run fail.
func runError(ctx, runCtx context.Context, err error, res result) error {
	switch {
	case err == nil || errors.Is(err, exec.ErrWaitDelay):
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("run stopped by the agent after %s, process group killed: %w", res.duration.Round(time.Millisecond), ctx.Err())
	case runCtx.Err() != nil:
		return fmt.Errorf("timed out after %s, process group killed", res.duration.Round(time.Millisecond))
	case res.status == "":
		return fmt.Errorf("start: %w", err)
	}
	msg := res.status
	if last := lastLine(res.stderr); last != "" {
		msg += ": " + last
	}
	return errors.New(msg)
}

// commandEnv is the hook's environment without go-plugin's variables (the
// command is not a plugin), with a PATH.
func commandEnv() []string {
	var env []string
	hasPath := false
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PLUGIN_") || name == sdk.Handshake.MagicCookieKey {
			continue
		}
		hasPath = hasPath || name == "PATH"
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	return env
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// lastLine is the last line of s, shortened to its last maxErrLine bytes:
// the part of a command's stderr that goes into the error.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > maxErrLine {
		s = "…" + strings.ToValidUTF8(s[len(s)-maxErrLine:], "")
	}
	return s
}

// tailBuffer keeps the last tailLimit bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	buf     []byte
	dropped int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - tailLimit; over > 0 {
		b.dropped += over
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// String is the kept tail, marked when its beginning was dropped.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("[%d bytes dropped] %s", b.dropped, b.buf)
	}
	return string(b.buf)
}
