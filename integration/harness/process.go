package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/childproc"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// Process is a long-running program the harness started inside a host's
// namespace. It is tracked by PID and stopped by Network.Close.
type Process struct {
	PID     int
	Name    string // what it is, for messages: "ikto-agent on a"
	LogPath string // its stdout and stderr

	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
	waitErr  error
}

// start runs argv inside ns with stdout and stderr to logPath: forked from a
// thread inside the namespace, so the PID is the program's and a launch
// pays for no `ip netns exec` (a process and a mount namespace each).
// Pdeathsig makes the kernel kill it should the test binary die without
// cleaning up.
func (n *Network) start(name, ns, logPath string, argv ...string) (*Process, error) {
	return n.startCmd(name, ns, logPath, exec.Command(argv[0], argv[1:]...))
}

// startCmd is start for a command with its own environment or descriptors.
func (n *Network) startCmd(name, ns, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: log file: %w", name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	// childproc.Start holds the forking thread until the child exits, so
	// Pdeathsig fires only when the test binary dies.
	err = childproc.StartIn(netnsPath(ns), cmd, func(err error) {
		p.exitCode = cmd.ProcessState.ExitCode()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			p.waitErr = err
		}
		close(p.done)
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.PID = cmd.Process.Pid
	if err := n.track(p); err != nil {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		<-p.done
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status once the process has exited (-1 if a signal
// killed it); ok is false while it runs.
func (p *Process) ExitCode() (code int, ok bool) {
	if !p.Exited() {
		return 0, false
	}
	return p.exitCode, true
}

// Wait waits for the process to exit or ctx to end, and returns the exit
// status (-1 if a signal killed it).
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.exitCode, p.waitErr
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for %s (pid %d): %w", p.Name, p.PID, ctx.Err())
	}
}

// Signal sends sig to the process by PID. Signalling one that has exited is
// not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// killWait bounds the wait for a SIGKILLed process to be reaped.
const killWait = 10 * time.Second

// Stop sends SIGTERM, waits up to grace, then SIGKILL, and waits for the
// process to be gone; ExitCode then tells how it ended.
func (p *Process) Stop(grace time.Duration) error {
	defer p.killGroup()
	if p.Exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.exitsWithin(grace) {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if p.exitsWithin(killWait) {
		return nil
	}
	return fmt.Errorf("stop %s (pid %d): still running %s after SIGKILL", p.Name, p.PID, killWait)
}

// killGroup kills what the process left behind in its process group (it
// leads one: Setpgid), such as the ping a `sh -c "until ping …"` loop runs,
// which would otherwise outlive its shell and its namespace, orphaned.
func (p *Process) killGroup() {
	_ = syscall.Kill(-p.PID, syscall.SIGKILL) // ESRCH: nothing left
}

// exitsWithin waits up to d for the process to exit and reports whether it
// did.
func (p *Process) exitsWithin(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Logs is everything the process wrote so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log %s unreadable: %v)", p.LogPath, err)
	}
	return string(b)
}

// Agent is a running ikto-agent.
type Agent struct {
	*Process
	Host       *Host
	ConfigPath string
	SocketPath string
}

// StartAgent writes cfg as the host's config and runs
// `ikto-agent -c CONFIG -s SOCKET` from bins inside the namespace, logging to
// a fresh file per start (agent-1.log, agent-2.log, …). Extra arguments (e.g.
// "--log-level", "debug") are appended.
func (h *Host) StartAgent(bins *Binaries, cfg config.Config, extra ...string) (*Agent, error) {
	return h.StartAgentUnder(nil, bins, cfg, extra...)
}

// StartAgentUnder is StartAgent as a service of sm (nil: none), which hands
// the agent what the agent before stored.
func (h *Host) StartAgentUnder(sm *ServiceManager, bins *Binaries, cfg config.Config, extra ...string) (*Agent, error) {
	bin, err := bins.Path(AgentBinary)
	if err != nil {
		return nil, err
	}
	cfgPath, err := h.WriteConfig(cfg)
	if err != nil {
		return nil, err
	}
	h.net.mu.Lock()
	h.lastConfig = cfg
	h.starts++
	logPath := filepath.Join(h.Dir, fmt.Sprintf("agent-%d.log", h.starts))
	h.net.mu.Unlock()
	cmd := exec.Command(bin, append([]string{"-c", cfgPath, "-s", h.SocketPath}, extra...)...)
	if sm != nil {
		sm.prepare(cmd)
	}
	p, err := h.net.startCmd("ikto-agent on "+h.Name, h.Namespace, logPath, cmd)
	if err != nil {
		return nil, err
	}
	return &Agent{Process: p, Host: h, ConfigPath: cfgPath, SocketPath: h.SocketPath}, nil
}

// LogTail is the last n lines of the log, for failure messages.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Start runs a long-lived program inside the host's namespace, logging to
// Dir/NAME.log; Network.Close stops it. name labels it in messages and the
// log file name.
func (h *Host) Start(name string, argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start %s on %s: no command", name, h.Name)
	}
	logPath := filepath.Join(h.Dir, name+".log")
	return h.net.start(name+" on "+h.Name, h.Namespace, logPath, argv...)
}

// netnsPath is where `ip netns add` bound the namespace ns.
func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }
