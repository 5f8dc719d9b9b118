// Package backend opens the wgdev.Device a config asks for: "kernel" (the
// wireguard module), "userspace" (embedded wireguard-go) or "auto", which
// tries the kernel and falls back to userspace only when the kernel backend
// reports wgdev.ErrNotSupported; any other kernel failure (permissions, a
// foreign link with the device's name) is returned, since silently running a
// userspace device beside a broken kernel one would hide it.
package backend

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/kernel"
	"github.com/ikto-mesh/ikto/pkg/wgdev/userspace"
)

// Open opens cfg.Name with the backend kind ("" means auto) and logs
// the one it chose under the key "backend". A nil log means slog.Default().
func Open(kind wgdev.Kind, cfg wgdev.Config, log *slog.Logger) (wgdev.Device, error) {
	if log == nil {
		log = slog.Default()
	}
	return open(kind, cfg, log, openers{
		kernel: func(cfg wgdev.Config) (wgdev.Device, error) {
			d, err := kernel.Open(cfg)
			if err != nil {
				return nil, err // not a typed nil inside the interface
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
	})
}

// openers are the backends' constructors, replaced in tests.
type openers struct {
	kernel    func(wgdev.Config) (wgdev.Device, error)
	userspace func(wgdev.Config, *slog.Logger) (wgdev.Device, error)
}

func open(kind wgdev.Kind, cfg wgdev.Config, log *slog.Logger, o openers) (wgdev.Device, error) {
	var (
		d   wgdev.Device
		err error
	)
	switch kind {
	case wgdev.KindKernel:
		d, err = o.kernel(cfg)
	case wgdev.KindUserspace:
		d, err = o.userspace(cfg, log)
	case wgdev.KindAuto, "":
		d, err = o.kernel(cfg)
		if errors.Is(err, wgdev.ErrNotSupported) {
			log.Info("kernel wireguard not available, using userspace", "device", cfg.Name, "err", err)
			d, err = o.userspace(cfg, log)
		}
	default:
		return nil, fmt.Errorf("open %s: unknown wg_backend %q (want %s, %s or %s)", cfg.Name, kind, wgdev.KindAuto, wgdev.KindKernel, wgdev.KindUserspace)
	}
	if err != nil {
		return nil, err
	}
	log.Info("wireguard device open", "device", d.Name(), "backend", d.Backend(), "public_key", d.PublicKey().String())
	return d, nil
}
