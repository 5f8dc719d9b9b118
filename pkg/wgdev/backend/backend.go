// Package backend opens the wgdev.Device a config asks for, adopting what is
// already there before making anything new. What exists under the device
// name decides (see choose): an existing kernel link is adopted, then an
// external wireguard-go answering on its UAPI socket, else a new kernel link
// is made, and only when the kernel has no wireguard module
// (wgdev.ErrNotSupported) an embedded userspace device. A name held by
// anything else is refused with ErrNameTaken, and Check says so before the
// agent touches the bucket. Any other kernel failure (permissions) is
// returned, since silently running a userspace device beside a broken kernel
// one would hide it.
package backend

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/external"
	"github.com/ikto-mesh/ikto/pkg/wgdev/kernel"
	"github.com/ikto-mesh/ikto/pkg/wgdev/userspace"
)

// ErrNameTaken is wrapped by Check's and Open's error when the device name is
// held by something the requested backend cannot drive: a link that is not
// WireGuard, or a WireGuard device of the other kind.
var ErrNameTaken = errors.New("wireguard device name taken")

// Check reports, without changing anything, whether Open(kind, ...) would
// find the name taken: a link called name that is not WireGuard (a dummy, a
// TUN nobody serves a UAPI socket for), or a device kind cannot drive (a
// kernel link for userspace, an external wireguard-go for kernel). The error
// wraps ErrNameTaken and names the link, its type and the fix. nil does not
// promise Open succeeds (the module may be missing, a port taken), only that
// the name is free or adoptable. It looks in the calling thread's network
// namespace and costs one netlink lookup and at most one socket dial.
func Check(kind wgdev.Kind, name string) error {
	_, err := choose(kind, name, inspect(name))
	return err
}

// Open opens cfg.Name with the backend kind ("" means auto) and logs the one
// it chose under the key "backend", with "adopted" saying whether the device
// was there before. A nil log means slog.Default().
func Open(kind wgdev.Kind, cfg wgdev.Config, log *slog.Logger) (wgdev.Device, error) {
	if log == nil {
		log = slog.Default()
	}
	return open(kind, cfg, log, inspectFor(cfg), realOpeners())
}

// inspectFor is inspect, knowing whether cfg carries the TUN the process
// before left and the link of the device's name still is that TUN.
func inspectFor(cfg wgdev.Config) found {
	f := inspect(cfg.Name)
	if cfg.TUN != nil && f.linkType != "" {
		name, err := userspace.TUNName(cfg.TUN)
		f.inherited = err == nil && name == cfg.Name
	}
	return f
}

// found is what is under a device name now.
type found struct {
	linkType   string // "" when there is no link of that name
	socketLive bool   // a process answers on /var/run/wireguard/NAME.sock
	inherited  bool   // the link is the TUN the process before left us (and is there)
	err        error  // the lookup itself failed
}

func inspect(name string) found {
	var f found
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil:
		f.linkType = link.Type()
	case !errors.As(err, &notFound):
		f.err = fmt.Errorf("find link %s: %w", name, err)
	}
	// A kernel link needs no socket; the dial is only worth it otherwise.
	if f.linkType != kernel.LinkType {
		f.socketLive = external.SocketLive(name)
	}
	return f
}

// choice is what Open does.
type choice int

const (
	useKernel   choice = iota + 1 // adopt the kernel link, or make one
	useExternal                   // adopt the external wireguard-go
	useEmbedded                   // run wireguard-go in this process
	kernelElseEmbedded
)

// choose decides from what is there; it is the whole policy, table-tested.
func choose(kind wgdev.Kind, name string, f found) (choice, error) {
	if f.err != nil {
		return 0, f.err
	}
	switch kind {
	case wgdev.KindAuto, "", wgdev.KindKernel, wgdev.KindUserspace:
	default:
		return 0, fmt.Errorf("unknown wg_backend %q (want %s, %s or %s)", kind, wgdev.KindAuto, wgdev.KindKernel, wgdev.KindUserspace)
	}
	sock := external.SocketPath(name)
	switch {
	case f.inherited && kind == wgdev.KindKernel:
		return 0, fmt.Errorf("%w: %s is the TUN of the embedded device the agent before ran, which wg_backend %s cannot drive; set wg_backend to %s or %s, or stop the agent (systemctl stop) so that the TUN goes, then start it",
			ErrNameTaken, name, kind, wgdev.KindAuto, wgdev.KindUserspace)
	case f.inherited:
		return useEmbedded, nil // ours: the device runs on it again
	case f.linkType == kernel.LinkType:
		if kind == wgdev.KindUserspace {
			return 0, fmt.Errorf("%w: %s is a kernel WireGuard link, which wg_backend %s cannot drive; set wg_backend to %s or %s, or delete it (ip link del %s)",
				ErrNameTaken, name, kind, wgdev.KindAuto, wgdev.KindKernel, name)
		}
		return useKernel, nil
	case f.linkType != "" && f.socketLive:
		if kind == wgdev.KindKernel {
			return 0, fmt.Errorf("%w: %s is a userspace WireGuard device (link type %q, served on %s by another process), which wg_backend %s cannot drive; set wg_backend to %s or %s, or stop that process",
				ErrNameTaken, name, f.linkType, sock, kind, wgdev.KindAuto, wgdev.KindUserspace)
		}
		return useExternal, nil
	case f.linkType != "":
		return 0, fmt.Errorf("%w: link %s exists and is of type %q, not WireGuard (no wireguard-go answers on %s); remove it (ip link del %s) or choose another wg_dev_name",
			ErrNameTaken, name, f.linkType, sock, name)
	case f.socketLive && kind == wgdev.KindUserspace:
		// The sockets' directory is shared by every network namespace: this
		// one is a wireguard-go elsewhere, and would refuse our own.
		return 0, fmt.Errorf("%w: a process answers on %s but there is no link %s in this network namespace; stop it or choose another wg_dev_name",
			ErrNameTaken, sock, name)
	}
	switch kind {
	case wgdev.KindKernel:
		return useKernel, nil
	case wgdev.KindUserspace:
		return useEmbedded, nil
	}
	return kernelElseEmbedded, nil
}

// openers are the backends' constructors, replaced in tests.
type openers struct {
	kernel    func(wgdev.Config) (wgdev.Device, error)
	external  func(wgdev.Config) (wgdev.Device, error)
	userspace func(wgdev.Config, *slog.Logger) (wgdev.Device, error)
}

func realOpeners() openers {
	return openers{
		kernel: func(cfg wgdev.Config) (wgdev.Device, error) {
			d, err := kernel.Open(cfg)
			if err != nil {
				return nil, err // not a typed nil inside the interface
			}
			return d, nil
		},
		external: func(cfg wgdev.Config) (wgdev.Device, error) {
			d, err := external.Open(cfg)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
		userspace: func(cfg wgdev.Config, log *slog.Logger) (wgdev.Device, error) {
			d, err := userspace.Open(cfg, log)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
	}
}

func open(kind wgdev.Kind, cfg wgdev.Config, log *slog.Logger, f found, o openers) (wgdev.Device, error) {
	// A TUN left that is no longer the link of the device's name (deleted,
	// or renamed, while no agent ran) has nothing to keep: the device is
	// made as on a first start, and the TUN goes.
	if cfg.TUN != nil && !f.inherited {
		log.Warn("the TUN the agent before left is no longer link "+cfg.Name+" (deleted or renamed while no agent ran?): released, and the device made as on a first start", "device", cfg.Name)
		cfg.TUN.Close()
		cfg.TUN = nil
	}
	c, err := choose(kind, cfg.Name, f)
	if err != nil {
		if cfg.TUN != nil {
			cfg.TUN.Close() // Open takes it over, also when it fails
		}
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	var d wgdev.Device
	switch c {
	case useKernel:
		d, err = o.kernel(cfg)
	case useExternal:
		d, err = o.external(cfg)
	case useEmbedded:
		d, err = o.userspace(cfg, log)
	case kernelElseEmbedded:
		d, err = o.kernel(cfg)
		if errors.Is(err, wgdev.ErrNotSupported) {
			log.Info("kernel wireguard not available, using userspace", "device", cfg.Name, "err", err)
			d, err = o.userspace(cfg, log)
		}
	}
	if err != nil {
		return nil, err
	}
	log.Info("wireguard device open", "device", d.Name(), "backend", d.Backend(), "adopted", f.linkType != "",
		"public_key", d.PublicKey().String(), "address", cfg.Address, "port", cfg.ListenPort)
	return d, nil
}
