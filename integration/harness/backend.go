package harness

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// BackendEnv names the WireGuard backend the agents of a test run get in
// their configs: userspace (the default: the embedded wireguard-go, which
// needs no kernel module), kernel (the kernel lane, `make test-kernel`) or
// auto.
const BackendEnv = "IKTO_TEST_WG_BACKEND"

// TestBackend is the wg_backend Host.Config writes: BackendEnv's value, or
// userspace when it is unset. A value that is not a backend is reported by
// CheckPrerequisites.
func TestBackend() wgdev.Kind {
	k, err := wgdev.ParseKind(os.Getenv(BackendEnv))
	if err != nil || os.Getenv(BackendEnv) == "" {
		return wgdev.KindUserspace
	}
	return k
}

// checkBackend reports a BackendEnv that names no backend, and, when it asks
// for the kernel, a kernel without the wireguard module: a kernel run that
// quietly fell back to userspace would prove nothing.
func checkBackend() error {
	v := os.Getenv(BackendEnv)
	if _, err := wgdev.ParseKind(v); err != nil {
		return fmt.Errorf("%s: %w", BackendEnv, err)
	}
	if wgdev.Kind(v) != wgdev.KindKernel {
		return nil
	}
	return KernelWireGuard()
}

var (
	kernelOnce sync.Once
	kernelErr  error
)

// KernelWireGuard is nil when this kernel can make a wireguard link (module
// loaded or loadable), checked once per process by making one in a namespace
// of its own; else the error wraps ErrMissingPrerequisite.
func KernelWireGuard() error {
	kernelOnce.Do(func() { kernelErr = probeKernelWireGuard() })
	return kernelErr
}

func probeKernelWireGuard() error {
	suffix, err := randomSuffix()
	if err != nil {
		return err
	}
	ns := "ikto-probe-" + suffix
	if _, err := ip("netns", "add", ns); err != nil {
		return err
	}
	defer ip("netns", "del", ns)
	if _, err := ip("-n", ns, "link", "add", "wg0", "type", "wireguard"); err != nil {
		return fmt.Errorf("%w: this kernel cannot make a wireguard link (no module?): %w", ErrMissingPrerequisite, err)
	}
	return nil
}

// inNamespace runs fn on an OS thread switched into the network namespace
// ns and switches it back. Threads are never retired here: the harness
// starts agents with Pdeathsig, which the kernel sends when the forking
// thread exits. Only if switching back fails is the thread left locked (Go
// then retires it) rather than reused in the wrong namespace.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns, err))
			return // still locked: the thread goes with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// wgctrlIn opens a wgctrl client whose generic netlink socket lives in ns,
// so it sees that namespace's kernel WireGuard links; UAPI sockets of
// userspace devices are in the shared filesystem and reached from anywhere.
func wgctrlIn(ns string) (*wgctrl.Client, error) {
	var c *wgctrl.Client
	err := inNamespace(ns, func() (err error) {
		c, err = wgctrl.New()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wgctrl in %s: %w", ns, err)
	}
	return c, nil
}

// Device reads the host's WireGuard device (key, port, peers) from inside
// its namespace, whatever its backend.
func (h *Host) Device() (*wgtypes.Device, error) {
	c, err := wgctrlIn(h.Namespace)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dev, err := c.Device(h.DevName)
	if err != nil {
		return nil, fmt.Errorf("read device %s of %s: %w", h.DevName, h.Name, err)
	}
	return dev, nil
}

// ConfigureDevice changes the host's device behind its agent's back, as an
// operator with wg(8) would.
func (h *Host) ConfigureDevice(cfg wgtypes.Config) error {
	c, err := wgctrlIn(h.Namespace)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.ConfigureDevice(h.DevName, cfg); err != nil {
		return fmt.Errorf("configure %s of %s: %w", h.DevName, h.Name, err)
	}
	return nil
}

// DeviceView reads the host's device as public key → view.
func (h *Host) DeviceView() (map[string]PeerView, error) {
	dev, err := h.Device()
	if err != nil {
		return nil, err
	}
	return peerViews(dev.Peers), nil
}
