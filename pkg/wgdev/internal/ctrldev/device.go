// Package ctrldev is the wgdev.Device that talks to a WireGuard device it does
// not own through wgctrl: a kernel link (generic netlink) or an external
// wireguard-go (its UAPI socket). The kernel and external backends differ only
// in how they find or make the device; once open, both are this handle, and
// closing it leaves the device and its peers as they are, so an agent restart
// does not cut traffic. The netlink and wgctrl calls sit behind the small
// LinkOps and Client interfaces so the backends are unit-tested with fakes.
package ctrldev

import (
	"fmt"
	"net"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

var _ wgdev.Device = (*Device)(nil)

// Client is the part of *wgctrl.Client a device uses.
type Client interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

var _ Client = (*wgctrl.Client)(nil)

// NewWgctrlClient opens a real wgctrl client: generic netlink in the calling
// thread's network namespace, and the UAPI sockets in /var/run/wireguard.
func NewWgctrlClient() (Client, error) { return wgctrl.New() }

// Device is a WireGuard interface driven through wgctrl.
type Device struct {
	*wgdev.Identity

	// mu serialises use of the wgctrl client (one generic netlink socket)
	// and its closing.
	mu     sync.Mutex
	client Client
	closed bool
}

// New wraps an open client for the device name; kind is what Backend reports.
func New(name string, kind wgdev.Kind, publicKey wgtypes.Key, client Client) *Device {
	return &Device{Identity: wgdev.NewIdentity(name, kind, publicKey), client: client}
}

// SetPrivateKey replaces the device's private key in one wgctrl call.
func (d *Device) SetPrivateKey(k wgtypes.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("set the private key of %s: %w", d.Name(), net.ErrClosed)
	}
	if err := d.client.ConfigureDevice(d.Name(), wgtypes.Config{PrivateKey: &k}); err != nil {
		return fmt.Errorf("set the private key of %s: %w", d.Name(), err)
	}
	d.SetPublicKey(k.PublicKey())
	return nil
}

// Peers reads the live peers.
func (d *Device) Peers() ([]wgtypes.Peer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("peers of %s: %w", d.Name(), net.ErrClosed)
	}
	dev, err := d.client.Device(d.Name())
	if err != nil {
		return nil, fmt.Errorf("peers of %s: %w", d.Name(), err)
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
		return fmt.Errorf("configure peers on %s: %w", d.Name(), net.ErrClosed)
	}
	if err := d.client.ConfigureDevice(d.Name(), wgtypes.Config{Peers: changes}); err != nil {
		return fmt.Errorf("configure peers on %s: %w", d.Name(), err)
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
		return fmt.Errorf("close %s: %w", d.Name(), err)
	}
	return nil
}

// SetIdentity gives the device key and port, writing only what differs from
// what it has: wireguard-go rebinds its UDP sockets on every listen_port it
// is sent, even the same one, and an adopted device must not blink. No peers
// and no ReplacePeers: an adopted device keeps its peers.
func SetIdentity(client Client, name string, key wgtypes.Key, port int) error {
	have, err := client.Device(name)
	if err != nil {
		return fmt.Errorf("read device: %w", err)
	}
	var cfg wgtypes.Config
	if have.PrivateKey != key {
		cfg.PrivateKey = &key
	}
	// Port 0 asks for any port: whatever the device has bound will do.
	if port != 0 && have.ListenPort != port {
		cfg.ListenPort = &port
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil {
		return nil
	}
	if err := client.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("set key and port %d: %w", port, err)
	}
	return nil
}
