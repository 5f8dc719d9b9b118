package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
)

// DebianNATS is where Debian's nats-server package (2.9.10 in bookworm)
// installs the server: the oldest server ikto supports.
const DebianNATS = "/usr/sbin/nats-server"

// processReadyTimeout bounds how long a nats-server process may take to
// accept clients.
const processReadyTimeout = 15 * time.Second

// NATSProcess is a nats-server binary run as a process on a random port with
// a configuration file of its own: the server the tests cannot embed (an
// older release). It is stopped by PID.
type NATSProcess struct {
	PID     int
	Addr    netip.AddrPort
	LogPath string
	bin     string
	conf    string // the configuration file
	done    chan struct{}
}

// StartNATSProcess runs bin with conf (nats-server configuration text;
// listen, server_name and jetstream's store_dir are added) on host and a
// random port, keeping its files in dir, and waits until it accepts
// clients.
func StartNATSProcess(bin string, host netip.Addr, dir, conf string) (*NATSProcess, error) {
	port, err := natsserver.FreePort(host)
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(host, uint16(port))
	full := fmt.Sprintf("listen: %s\nserver_name: ikto-test-process\njetstream {\n  store_dir: %s\n}\n%s",
		strconv.Quote(addr.String()), strconv.Quote(filepath.Join(dir, "jetstream")), conf)
	confPath := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(confPath, []byte(full), 0o600); err != nil {
		return nil, fmt.Errorf("nats-server config: %w", err)
	}
	p := &NATSProcess{Addr: addr, LogPath: filepath.Join(dir, "nats-server.log"), bin: bin, conf: confPath}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// start runs the server with its configuration file, appending to its log,
// and waits until it accepts clients.
func (p *NATSProcess) start() error {
	logFile, err := os.OpenFile(p.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("nats-server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(p.bin, "-c", p.conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Should the test binary die, the kernel kills the server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	p.PID, p.done = cmd.Process.Pid, make(chan struct{})
	done := p.done
	go func() { _ = cmd.Wait(); close(done) }()
	if err := p.waitReady(); err != nil {
		_ = p.Close()
		return err
	}
	return nil
}

// NATSServer is a NATS server a test stops and starts again on the same
// port and store: the embedded one or a nats-server process, so that a
// scenario runs unchanged on either.
type NATSServer interface {
	URL() string
	Name() string
	// Start starts a stopped server and waits until it accepts clients;
	// on a running one it does nothing.
	Start() error
	// Shutdown stops the server and waits until it is gone.
	Shutdown()
	Running() bool
}

var (
	_ NATSServer = (*NATSProcess)(nil)
	_ NATSServer = (*natsserver.Server)(nil)
)

// processStopTimeout bounds a nats-server process's own shutdown on
// SIGTERM before it is killed.
const processStopTimeout = 10 * time.Second

// Start runs a stopped server again with the same configuration, port,
// store and log.
func (p *NATSProcess) Start() error {
	if p.Running() {
		return nil
	}
	return p.start()
}

// Shutdown stops the server as a service manager would: SIGTERM, which
// nats-server answers by closing its clients and its store, and SIGKILL
// should it not exit within processStopTimeout.
func (p *NATSProcess) Shutdown() {
	if !p.Running() {
		return
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err == nil {
		select {
		case <-p.done:
			return
		case <-time.After(processStopTimeout):
		}
	}
	_ = p.Close()
}

// Running reports whether the process is up (it may still be starting).
func (p *NATSProcess) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Name names the server in logs: the binary and its address.
func (p *NATSProcess) Name() string { return filepath.Base(p.bin) + "@" + p.Addr.String() }

// Restart stops the server and runs it again with the same configuration,
// port, store and log; stopped, when set, runs while it is down.
func (p *NATSProcess) Restart(stopped func()) error {
	if err := p.Close(); err != nil {
		return err
	}
	if stopped != nil {
		stopped()
	}
	return p.start()
}

// waitReady polls the port until the server answers with its INFO line.
func (p *NATSProcess) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), processReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.Addr.String())
		if err == nil {
			buf := make([]byte, 4)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, err = c.Read(buf)
			c.Close()
			if err == nil && string(buf) == "INFO" {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("nats-server exited at start-up:\n%s", p.Log())
		case <-ctx.Done():
			return fmt.Errorf("nats-server on %s not ready after %s:\n%s", p.Addr, processReadyTimeout, p.Log())
		case <-tick.C:
		}
	}
}

// URL is the client URL.
func (p *NATSProcess) URL() string { return "nats://" + p.Addr.String() }

// Log is what the server has logged so far.
func (p *NATSProcess) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// Violations are the permission violations the server logged so far.
func (p *NATSProcess) Violations() []string {
	var out []string
	for _, l := range strings.Split(p.Log(), "\n") {
		if strings.Contains(l, "Violation") {
			out = append(out, l)
		}
	}
	return out
}

// Close kills the server by PID and waits for it. A server that has
// exited already is not killed: its PID may be another process's by now.
func (p *NATSProcess) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := syscall.Kill(p.PID, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		err = nil
	}
	<-p.done
	return err
}
