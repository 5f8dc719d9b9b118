package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

const linkTypeWireguard = "wireguard"

// Open creates the wireguard link cfg.Name, or adopts an existing one without
// touching its peers, then sets MTU, address, up, key and port. Without the
// wireguard module the error wraps wgdev.ErrNotSupported.
func Open(cfg wgdev.Config) (*Device, error) {
	return open(cfg, netlinkOps{}, newWgctrlClient)
}

func open(cfg wgdev.Config, links linkOps, newClient func() (wgClient, error)) (*Device, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("open %s: invalid address %s", cfg.Name, cfg.Address)
	}
	link, err := ensureLink(links, cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	if cfg.MTU > 0 && link.Attrs().MTU != cfg.MTU {
		if err := links.LinkSetMTU(link, cfg.MTU); err != nil {
			return nil, fmt.Errorf("open %s: set mtu %d: %w", cfg.Name, cfg.MTU, err)
		}
	}
	if err := ensureAddress(links, link, cfg.Address); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Name, err)
	}
	if err := links.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("open %s: set link up: %w", cfg.Name, err)
	}

	client, err := newClient()
	if err != nil {
		return nil, fmt.Errorf("open %s: wgctrl: %w", cfg.Name, err)
	}
	key, port := cfg.PrivateKey, cfg.ListenPort
	// No Peers and no ReplacePeers: an adopted device keeps its peers.
	if err := client.ConfigureDevice(cfg.Name, wgtypes.Config{PrivateKey: &key, ListenPort: &port}); err != nil {
		client.Close()
		return nil, fmt.Errorf("open %s: set key and port %d: %w", cfg.Name, port, err)
	}
	return &Device{name: cfg.Name, publicKey: key.PublicKey(), client: client}, nil
}

// ensureLink returns the wireguard link called name, creating it if there is
// none. A link of another type with that name is an error, not something to
// delete: it belongs to someone else.
func ensureLink(links linkOps, name string, mtu int) (netlink.Link, error) {
	link, err := links.LinkByName(name)
	if err == nil {
		if t := link.Type(); t != linkTypeWireguard {
			return nil, fmt.Errorf("link %s exists and is of type %q, not %s; remove it or choose another wg_dev_name", name, t, linkTypeWireguard)
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

// ensureAddress adds addr to link unless it is already there, leaving other
// addresses alone.
func ensureAddress(links linkOps, link netlink.Link, addr netip.Prefix) error {
	have, err := links.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	want := &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
	for _, a := range have {
		if a.IPNet != nil && a.IP.Equal(want.IP) && maskOnes(a.Mask) == addr.Bits() {
			return nil
		}
	}
	if err := links.AddrAdd(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("add address %s: %w", addr, err)
	}
	return nil
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}
