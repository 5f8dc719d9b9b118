package userspace

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Open creates the TUN interface cfg.Name, starts wireguard-go on it with the
// key and listen port, serves the UAPI socket, adds cfg.Address and sets the
// link up. A nil log means slog.Default().
//
// The TUN interface, its netlink listener and the UDP sockets are all created
// synchronously, in the calling OS thread's network namespace, and nothing
// reopens them later (see withoutLinkEvents), so Open may run on a thread
// locked into another namespace. Changing the listen port through the UAPI
// socket (`wg set NAME listen-port`) would rebind from the socket's
// goroutine, in whatever namespace its thread is in.
func Open(cfg wgdev.Config, log *slog.Logger) (*Device, error) {
	if log == nil {
		log = slog.Default()
	}
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("open %s: invalid address %s", cfg.Name, cfg.Address)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = device.DefaultMTU
	}
	tdev, err := openTUN(cfg, mtu)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	held := holdReads(tdev)
	refused := make(chan wgdev.Refusal, refusedQueue)
	dev := device.NewDevice(withoutLinkEvents(held), conn.NewDefaultBind(), newLogger(log, cfg.Name, refused))
	d := newDevice(cfg, dev, log)
	d.tun, d.held = tdev, held
	d.refused = refused
	opened := false
	defer func() {
		if !opened {
			d.Close()
		}
	}()

	if err := d.listenUAPI(); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	// Set while the device is down, so the port is bound once, by Up below.
	own := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(cfg.PrivateKey[:]), cfg.ListenPort)
	if err := d.dev.IpcSet(own); err != nil {
		return nil, fmt.Errorf("open %s: set key and port: %w", cfg.Name, err)
	}
	if err := d.dev.Up(); err != nil {
		return nil, fmt.Errorf("open %s: up (udp port %d): %w", cfg.Name, cfg.ListenPort, err)
	}
	if err := ensureAddressUp(cfg.Name, cfg.Address); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	opened = true // backend.Open logs it, for every backend
	return d, nil
}

// openTUN makes the TUN interface, or takes over the one the process before
// left (cfg.TUN), which must be cfg.Name.
func openTUN(cfg wgdev.Config, mtu int) (tun.Device, error) {
	if cfg.TUN == nil {
		t, err := tun.CreateTUN(cfg.Name, mtu)
		if err != nil {
			return nil, fmt.Errorf("create tun: %w", err)
		}
		return t, nil
	}
	name, err := TUNName(cfg.TUN)
	if err != nil {
		cfg.TUN.Close()
		return nil, fmt.Errorf("the TUN left by the process before: %w", err)
	}
	if name != cfg.Name {
		cfg.TUN.Close()
		return nil, fmt.Errorf("the TUN left by the process before is %s, not %s", name, cfg.Name)
	}
	f, err := pollable(cfg.TUN)
	cfg.TUN.Close()
	if err != nil {
		return nil, fmt.Errorf("the TUN left by the process before: %w", err)
	}
	t, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("take over the TUN left by the process before: %w", err)
	}
	return t, nil
}

// pollable is another descriptor of f's open file, non-blocking, so that
// Go's poller serves its reads (and Close ends them) as for a TUN made here:
// the flag belongs to the open file, which whoever held it may have changed.
func pollable(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		if nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			err = unix.SetNonblock(nfd, true)
		}
	})
	if err = errors.Join(err, cerr); err != nil {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "/dev/net/tun"), nil
}

// TUNName is the name of the TUN interface f is open on.
func TUNName(f *os.File) (string, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return "", err
	}
	var name string
	cerr := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, err = unix.NewIfreq(""); err != nil {
			return
		}
		if err = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err == nil {
			name = ifr.Name()
		}
	})
	if err = errors.Join(err, cerr); err != nil {
		return "", fmt.Errorf("TUNGETIFF: %w", err)
	}
	return name, nil
}

// tunGetDevNetNS is TUNGETDEVNETNS, _IO('T', 227) (Linux 5.2): a descriptor
// of the network namespace the TUN's link is in.
const tunGetDevNetNS = 0x54e3

// CheckTUN reports whether f is open on the TUN link named name in this
// process's network namespace: a TUN another process passes (ikto-agent
// --replace) is run on only then. A link of that name in another
// namespace is not this host's device.
func CheckTUN(f *os.File, name string) error {
	got, err := TUNName(f)
	if err != nil {
		return err
	}
	if got != name {
		return fmt.Errorf("the TUN is link %q, not %s", got, name)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var nsfd int
	cerr := rc.Control(func(fd uintptr) {
		nsfd, err = unix.IoctlRetInt(int(fd), tunGetDevNetNS)
	})
	if err = errors.Join(err, cerr); err != nil {
		return fmt.Errorf("TUNGETDEVNETNS: %w", err)
	}
	defer unix.Close(nsfd)
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(nsfd, &theirs); err != nil {
		return fmt.Errorf("the TUN's network namespace: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		return fmt.Errorf("this network namespace: %w", err)
	}
	if theirs.Dev != ours.Dev || theirs.Ino != ours.Ino {
		return fmt.Errorf("the TUN's link %s is in another network namespace", name)
	}
	return nil
}

// TUN is the TUN interface's file, for the process after this one to take
// over (see wgdev.Config.TUN); nil for a device without one (unit tests).
func (d *Device) TUN() *os.File {
	if t, ok := d.tun.(interface{ File() *os.File }); ok {
		return t.File()
	}
	return nil
}

// newDevice wraps a wireguard-go device without any OS plumbing; tests build
// one on a channel TUN.
func newDevice(cfg wgdev.Config, dev *device.Device, log *slog.Logger) *Device {
	return &Device{
		Identity: wgdev.NewIdentity(cfg.Name, wgdev.KindUserspace, cfg.PrivateKey.PublicKey()),
		log:      log,
		dev:      dev,
	}
}

// listenUAPI opens /var/run/wireguard/NAME.sock and serves it. ipc.UAPIOpen
// replaces a stale socket left by a crashed process (one nobody answers on)
// and refuses one that a live process still serves.
func (d *Device) listenUAPI() error {
	f, err := ipc.UAPIOpen(d.Name())
	if err != nil {
		return fmt.Errorf("uapi socket %s: %w", socketPath(d.Name()), err)
	}
	defer f.Close() // UAPIListen dups the descriptor
	l, err := ipc.UAPIListen(d.Name(), f)
	if err != nil {
		return fmt.Errorf("uapi socket %s: %w", socketPath(d.Name()), err)
	}
	d.uapi = l
	d.sockPath = socketPath(d.Name())
	d.acceptDone = make(chan struct{})
	go d.serveUAPI()
	return nil
}

// socketPath mirrors ipc's unexported sockPath: the directory is fixed on
// Linux.
func socketPath(name string) string {
	return "/var/run/wireguard/" + name + ".sock"
}
