// Package kernel opens the wgdev.Device backed by the Linux wireguard module:
// netlink creates the link (or adopts an existing one of that name without
// touching its peers), sets MTU and address and brings it up; wgctrl sets the
// key and port and configures peers. Open never replaces peers and Close
// leaves the interface and its peers in place, so an agent restart does not
// cut traffic.
package kernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
)

// LinkType is what netlink calls a kernel WireGuard link.
const LinkType = "wireguard"

// Device is a kernel WireGuard interface driven through wgctrl; Backend
// reports wgdev.KindKernel.
type Device = ctrldev.Device

// Open creates the wireguard link cfg.Name, or adopts an existing one without
// touching its peers, then sets MTU, address, up, key and port. Without the
// wireguard module the error wraps wgdev.ErrNotSupported.
func Open(cfg wgdev.Config) (*Device, error) {
	return open(cfg, ctrldev.NetlinkOps{}, ctrldev.NewWgctrlClient)
}

func open(cfg wgdev.Config, links ctrldev.LinkOps, newClient func() (ctrldev.Client, error)) (*Device, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("open %s: invalid address %s", cfg.Name, cfg.Address)
	}
	link, err := ensureLink(links, cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	if err := ctrldev.PrepareLink(links, link, cfg.MTU, cfg.Address); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	client, err := newClient()
	if err != nil {
		return nil, fmt.Errorf("open %s: wgctrl: %w", cfg.Name, err)
	}
	if err := ctrldev.SetIdentity(client, cfg.Name, cfg.PrivateKey, cfg.ListenPort); err != nil {
		client.Close()
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	return ctrldev.New(cfg.Name, wgdev.KindKernel, cfg.PrivateKey.PublicKey(), client), nil
}

// ensureLink returns the wireguard link called name, creating it if there is
// none. A link of another type with that name is an error, not something to
// delete: it belongs to someone else.
func ensureLink(links ctrldev.LinkOps, name string, mtu int) (netlink.Link, error) {
	link, err := links.LinkByName(name)
	if err == nil {
		if t := link.Type(); t != LinkType {
			return nil, fmt.Errorf("link %s exists and is of type %q, not %s; remove it or choose another wg_dev_name", name, t, LinkType)
		}
		return link, nil
	}
	var notFound netlink.LinkNotFoundError
	if !errors.As(err, &notFound) {
		return nil, fmt.Errorf("find link %s: %w", name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	if err := links.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		if isNotSupported(err) {
			return nil, fmt.Errorf("create wireguard link %s: %w (%w)", name, wgdev.ErrNotSupported, err)
		}
		return nil, fmt.Errorf("create wireguard link %s: %w", name, err)
	}
	// Re-read it: the kernel fills in the index and the MTU it chose.
	link, err = links.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find link %s after creating it: %w", name, err)
	}
	return link, nil
}

// isNotSupported reports whether LinkAdd failed because the kernel has no
// wireguard link type (module missing and not loadable).
func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || strings.Contains(err.Error(), "operation not supported")
}
