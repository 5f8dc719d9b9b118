// Package external adopts a userspace WireGuard device that another process
// runs — an external wireguard-go, as ikto 0.3.0 hosts have — through its
// UAPI socket at /var/run/wireguard/NAME.sock, with wgctrl. The process, its
// TUN link and its peers are not ours: Open only makes sure of key, port,
// MTU, address and link state, writing what differs, and Close leaves the
// device running with its peers, so an agent restart does not cut traffic.
package external

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
)

// SocketDir is where wireguard-go and wgctrl put and look for UAPI sockets
// on Linux; the path is fixed in both.
const SocketDir = "/var/run/wireguard"

// SocketPath is the UAPI socket of the device name.
func SocketPath(name string) string { return filepath.Join(SocketDir, name+".sock") }

// dialTimeout bounds the liveness check of a socket; a live wireguard-go
// accepts at once.
const dialTimeout = time.Second

// SocketLive reports whether a process answers on name's UAPI socket. A
// socket file left by a process that died refuses the connection.
func SocketLive(name string) bool {
	c, err := net.DialTimeout("unix", SocketPath(name), dialTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Device is an adopted external device; Backend reports wgdev.KindExternal.
type Device = ctrldev.Device

// Open adopts the device cfg.Name: its link must exist in the calling
// thread's network namespace and a process must answer on its UAPI socket.
func Open(cfg wgdev.Config) (*Device, error) {
	return open(cfg, ctrldev.NetlinkOps{}, ctrldev.NewWgctrlClient)
}

func open(cfg wgdev.Config, links ctrldev.LinkOps, newClient func() (ctrldev.Client, error)) (*Device, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("adopt %s: invalid address %s", cfg.Name, cfg.Address)
	}
	link, err := links.LinkByName(cfg.Name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, fmt.Errorf("adopt %s: no link %s in this network namespace for the socket %s", cfg.Name, cfg.Name, SocketPath(cfg.Name))
		}
		return nil, fmt.Errorf("adopt %s: find link: %w", cfg.Name, err)
	}
	client, err := newClient()
	if err != nil {
		return nil, fmt.Errorf("adopt %s: wgctrl: %w", cfg.Name, err)
	}
	// Key and port first: if the socket does not answer as WireGuard,
	// nothing of the link has been changed.
	if err := ctrldev.SetIdentity(client, cfg.Name, cfg.PrivateKey, cfg.ListenPort); err != nil {
		client.Close()
		return nil, fmt.Errorf("adopt %s through %s: %w", cfg.Name, SocketPath(cfg.Name), err)
	}
	if err := ctrldev.PrepareLink(links, link, cfg.MTU, cfg.Address); err != nil {
		client.Close()
		return nil, fmt.Errorf("adopt %s: %w", cfg.Name, err)
	}
	return ctrldev.New(cfg.Name, wgdev.KindExternal, cfg.PrivateKey.PublicKey(), client), nil
}
