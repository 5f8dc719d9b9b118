// Package kernel is the wgdev.Device backed by the Linux wireguard module:
// netlink creates (or adopts) the link, sets MTU and address and brings it
// up; wgctrl sets the key and port and configures peers. Open never replaces
// peers and Close leaves the interface and its peers in place, so an agent
// restart does not cut traffic. The netlink and wgctrl calls sit behind the
// small linkOps and wgClient interfaces so the logic is unit-tested with
// fakes on machines without the module.
package kernel

import (
	"fmt"
	"net"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

var _ wgdev.Device = (*Device)(nil)

// Device is a kernel WireGuard interface driven through wgctrl.
type Device struct {
	name      string
	publicKey wgtypes.Key

	// mu serialises use of the wgctrl client (one generic netlink socket)
	// and its closing.
	mu     sync.Mutex
	client wgClient
	closed bool
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// Backend is wgdev.KindKernel.
func (d *Device) Backend() wgdev.Kind { return wgdev.KindKernel }

// PublicKey is the device's public key.
func (d *Device) PublicKey() wgtypes.Key { return d.publicKey }

// Peers reads the live peers from the kernel.
func (d *Device) Peers() ([]wgtypes.Peer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("peers of %s: %w", d.name, net.ErrClosed)
	}
	dev, err := d.client.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("peers of %s: %w", d.name, err)
	}
	return dev.Peers, nil
}

// ConfigurePeers sends every change in one wgctrl call, never with
// ReplacePeers.
func (d *Device) ConfigurePeers(changes []wgtypes.PeerConfig) error {
	if len(changes) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("configure peers on %s: %w", d.name, net.ErrClosed)
	}
	if err := d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: changes}); err != nil {
		return fmt.Errorf("configure peers on %s: %w", d.name, err)
	}
	return nil
}

// Close closes the wgctrl client; the interface and its peers stay. Close is
// idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if err := d.client.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d.name, err)
	}
	return nil
}
