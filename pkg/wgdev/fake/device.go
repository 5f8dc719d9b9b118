// Package fake is an in-memory wgdev.Device for unit tests and control-plane
// benchmarks. It applies []wgtypes.PeerConfig deltas with the kernel's
// semantics (Remove, UpdateOnly, ReplaceAllowedIPs, an allowed IP moving to the
// last peer that claims it, the device's own key being ignored), counts the
// calls that reach it, can fail the next call on demand, and lets a test change
// peers behind the agent's back to simulate drift. One mutex guards the peer
// map, which is enough for 10,000 peers and thousands of callers.
package fake

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

var _ wgdev.Device = (*Device)(nil)

// Device is an in-memory WireGuard device. The zero value is not usable; use New.
type Device struct {
	*wgdev.Identity
	hasKey bool // the kernel only ignores "self" peers once the device has a key

	calls atomic.Int64
	reads atomic.Int64

	mu       sync.RWMutex
	peers    map[wgtypes.Key]*wgtypes.Peer
	owners   map[netip.Prefix]wgtypes.Key // allowed-ip prefix → owning peer
	failNext error
	closed   bool
}

// New returns an empty device named cfg.Name whose key is cfg.PrivateKey.
func New(cfg wgdev.Config) *Device {
	var pub wgtypes.Key
	if cfg.PrivateKey != (wgtypes.Key{}) {
		pub = cfg.PrivateKey.PublicKey()
	}
	return &Device{
		Identity: wgdev.NewIdentity(cfg.Name, wgdev.KindFake, pub),
		hasKey:   pub != (wgtypes.Key{}),
		peers:    make(map[wgtypes.Key]*wgtypes.Peer),
		owners:   make(map[netip.Prefix]wgtypes.Key),
	}
}

// SetPrivateKey replaces the device's key.
func (d *Device) SetPrivateKey(k wgtypes.Key) error {
	d.SetPublicKey(k.PublicKey())
	return nil
}

// Peers returns deep copies of the peers, sorted by public key so tests can
// compare them directly.
func (d *Device) Peers() ([]wgtypes.Peer, error) {
	d.reads.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, d.errClosed()
	}
	return d.snapshotLocked(), nil
}

// ConfigurePeers applies the changes in order, as one call. An empty slice
// returns at once and is not counted. A call failed by FailNext is counted and
// changes nothing.
func (d *Device) ConfigurePeers(changes []wgtypes.PeerConfig) error {
	if len(changes) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.errClosed()
	}
	d.calls.Add(1)
	if err := d.failNext; err != nil {
		d.failNext = nil
		return fmt.Errorf("configure peers on %s: %w", d.Name(), err)
	}
	for i := range changes {
		d.applyLocked(&changes[i])
	}
	return nil
}

// Close marks the device closed; later calls to Peers and ConfigurePeers fail
// with net.ErrClosed. Close is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// Calls reports how many non-empty ConfigurePeers calls reached the device,
// including ones failed by FailNext.
func (d *Device) Calls() int { return int(d.calls.Load()) }

// Reads reports how many times Peers was called: a real device's Peers is a
// dump of every peer, which callers should not repeat needlessly.
func (d *Device) Reads() int { return int(d.reads.Load()) }

// FailNext makes the next non-empty ConfigurePeers call return err (wrapped)
// without changing anything. A nil err clears a pending failure.
func (d *Device) FailNext(err error) {
	d.mu.Lock()
	d.failNext = err
	d.mu.Unlock()
}

// Closed reports whether Close was called.
func (d *Device) Closed() bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.closed
}

func (d *Device) errClosed() error {
	return fmt.Errorf("device %s: %w", d.Name(), net.ErrClosed)
}

// errNoSuchPeer is returned by drift helpers naming a peer that is not there.
var errNoSuchPeer = errors.New("no such peer")
