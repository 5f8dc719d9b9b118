package userspace

import (
	"encoding/hex"
	"fmt"
	"log/slog"

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
	tdev, err := tun.CreateTUN(cfg.Name, mtu)
	if err != nil {
		return nil, fmt.Errorf("open %s: create tun: %w", cfg.Name, err)
	}
	dev := device.NewDevice(withoutLinkEvents(tdev), conn.NewDefaultBind(), newLogger(log, cfg.Name))
	d := newDevice(cfg, dev, log)
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
