package hook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// hookPATH is the whole PATH a hook gets: hooks start with a clean
// environment, not the agent's (which may hold credentials), but a hook that
// runs a command still finds the usual system directories.
const hookPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// exitPoll is how often a supervisor checks whether its idle hook process is
// still there. go-plugin exposes exit only as a flag; a crash of a busy
// process shows at once as a failed call.
const exitPoll = 100 * time.Millisecond

// process is one running hook executable.
type process struct {
	client  *plugin.Client
	cmd     *exec.Cmd
	hook    sdk.Hook
	pid     int
	sockDir string
	exited  chan struct{} // closed when the process is found gone
	done    chan struct{} // closed by kill; ends the exit watcher
	// applied is the state this process last applied successfully. It
	// starts nil, so a fresh process, which knows nothing of its
	// predecessors, is handed every peer as Added.
	applied *state
}

// startProcess execs the hook, checks its pinned hash, does go-plugin's
// handshake and dispenses the hook's gRPC client.
func startProcess(s *supervisor, dir string) (*process, error) {
	sockDir, err := os.MkdirTemp(dir, "hook-")
	if err != nil {
		return nil, fmt.Errorf("start %s: socket directory: %w", s.cfg.Path, err)
	}
	cmd := exec.Command(s.cfg.Path)
	cmd.Dir = "/" // a hook must not depend on where the agent was started
	cmd.Env = hookEnv(s.log, sockDir)
	// Setpgid puts the hook and anything it runs in a group of their own, so
	// one kill reaches them all and a Ctrl-C at the agent's terminal does not
	// reach them before the agent has stopped them. Pdeathsig kills the hook
	// if the agent dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	cc := sdk.ClientConfig(cmd)
	cc.SkipHostEnv = true
	cc.Logger = newHclogSlog(s.log)
	cc.StartTimeout = max(s.timeout, 10*time.Second)
	cc.SyncStdout = &lineWriter{emit: func(line string) {
		s.log.Warn("hook wrote to stdout; hooks must log with sdk.Logger", "line", line)
	}}
	cc.SyncStderr = &lineWriter{emit: func(line string) { s.log.Info(line) }}
	if s.pin != nil {
		// A fresh hash each start: SecureConfig's Hash accumulates.
		cc.SecureConfig = &plugin.SecureConfig{Checksum: s.pin, Hash: sha256.New()}
	}

	client := plugin.NewClient(cc)
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		os.RemoveAll(sockDir)
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, s.pinMismatch()
		}
		return nil, fmt.Errorf("start %s: %w", s.cfg.Path, err)
	}
	p := &process{
		client: client, cmd: cmd, pid: cmd.Process.Pid, sockDir: sockDir,
		exited: make(chan struct{}), done: make(chan struct{}),
	}
	if p.hook, err = sdk.Dispense(rpc); err != nil {
		p.kill()
		return nil, fmt.Errorf("start %s: %w", s.cfg.Path, err)
	}
	go p.watchExit()
	return p, nil
}

func hookEnv(log *slog.Logger, sockDir string) []string {
	level := "info"
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = "debug"
	}
	return []string{
		"PATH=" + hookPATH,
		plugin.EnvUnixSocketDir + "=" + sockDir,
		sdk.LogLevelEnv + "=" + level,
	}
}

// pinMismatch names the file, what it hashes to and what the config pins.
func (s *supervisor) pinMismatch() error {
	got := "unreadable"
	if f, err := os.Open(s.cfg.Path); err == nil {
		h := sha256.New()
		if _, err := io.Copy(h, f); err == nil {
			got = hex.EncodeToString(h.Sum(nil))
		}
		f.Close()
	}
	return fmt.Errorf("refusing to start %s: its sha256 is %s but hooks[].sha256 pins %s (if the binary was upgraded on purpose, pin the new hash)",
		s.cfg.Path, got, hex.EncodeToString(s.pin))
}

func (p *process) watchExit() {
	t := time.NewTicker(exitPoll)
	defer t.Stop()
	for !p.client.Exited() {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
	close(p.exited)
}

// explain adds how the process ended to an error caused by its death, so
// the log says "exit status 3" or "signal: killed" rather than only that a
// connection broke.
func (p *process) explain(err error) error {
	var re *sdk.RemoteError
	if errors.As(err, &re) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	select {
	case <-p.exited:
	case <-time.After(time.Second):
		return err // a transport failure with the process still there
	}
	how := "exited"
	if st := p.cmd.ProcessState; st != nil { // set before Exited reports true
		how = st.String()
	}
	if errors.Is(err, errDead) {
		return fmt.Errorf("%w (pid %d: %s)", errDead, p.pid, how)
	}
	return fmt.Errorf("%w (pid %d %s)", err, p.pid, how)
}

// kill SIGKILLs the hook's process group by its id (the hook's PID) and reaps
// the hook. The group is killed before the hook is reaped, so its id cannot
// have been reused by then.
func (p *process) kill() {
	if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Kill()
	}
	p.client.Kill()
	close(p.done)
	os.RemoveAll(p.sockDir)
}
