// Package netnstest gives wgdev's privileged tests throw-away network
// namespaces and external wireguard-go processes. Everything carries a
// per-run random name (wireguard-go's sockets share /var/run/wireguard across
// namespaces), is removed in t.Cleanup, and processes are killed by PID.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ikto-mesh/ikto/internal/testkit/childproc"
)

// Require skips a test that needs root and /dev/net/tun (and the given
// programs in PATH), or fails it when IKTO_REQUIRE_INTEGRATION=1 says this
// machine must run it.
func Require(t testing.TB, programs ...string) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := os.Stat("/dev/net/tun"); err != nil {
		why = "needs /dev/net/tun"
	}
	for _, p := range programs {
		if why != "" {
			break
		}
		if _, err := exec.LookPath(p); err != nil {
			why = fmt.Sprintf("needs %s in PATH (apt-get install %s)", p, p)
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s (IKTO_REQUIRE_INTEGRATION=1)", why)
	}
	t.Skip(why)
}

// Suffix is 6 random hex digits, for names unique on the machine.
func Suffix(t testing.TB) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// Namespace is a named network namespace made for one test.
type Namespace struct {
	Name string
}

// NewNamespace creates the namespace with `ip netns add` and lo up, and
// deletes it (with every link in it) when the test ends.
func NewNamespace(t testing.TB, name string) *Namespace {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := &Namespace{Name: name}
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NS args...` and fails the test on error.
func (ns *Namespace) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %v: %v: %s", ns.Name, args, err, out)
	}
	return string(out)
}

// Netlink is a netlink handle whose sockets live in the namespace, so its
// links can be read and changed without switching threads; it is closed when
// the test ends.
func (ns *Namespace) Netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns.Name, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in netns %s: %v", ns.Name, err)
	}
	t.Cleanup(nl.Close)
	return nl
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// never switched back: the goroutine ends locked, so Go retires the thread
// instead of reusing it in the wrong namespace.
func (ns *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns.Name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// socketWait bounds the wait for wireguard-go to open its UAPI socket.
const socketWait = 10 * time.Second

// StartWireguardGo runs `wireguard-go -f NAME` inside the namespace, as an
// ikto 0.3.0 host does outside the agent, and waits until its UAPI socket
// answers. It is killed by PID when the test ends (also on failure) and its
// socket file removed.
func (ns *Namespace) StartWireguardGo(t testing.TB, name string) *Process {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "wireguard-go", "-f", name)
	log := filepath.Join(t.TempDir(), "wireguard-go.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: if the test binary dies, so does the device (childproc
	// says why it must start from a thread of its own).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan struct{})
	if err := childproc.Start(cmd, func(error) { close(done) }); err != nil {
		t.Fatalf("start wireguard-go: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = os.Remove(filepath.Join("/var/run/wireguard", name+".sock"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), socketWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.Dial("unix", filepath.Join("/var/run/wireguard", name+".sock"))
		if err == nil {
			c.Close()
			return &Process{PID: cmd.Process.Pid, done: done}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log)
			t.Fatalf("wireguard-go -f %s exited: %s", name, b)
		case <-ctx.Done():
			t.Fatalf("wireguard-go -f %s: no socket after %s: %v", name, socketWait, errors.Join(err, ctx.Err()))
		case <-tick.C:
		}
	}
}

// Process is a program a test started.
type Process struct {
	PID  int
	done chan struct{}
}

// Running reports whether it has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
