// Package userspace is the wgdev.Device backed by wireguard-go embedded in
// this process: a TUN interface, UDP sockets and a UAPI socket at
// /var/run/wireguard/NAME.sock so `wg show` and wgctrl see the device. Peers
// are read and configured in-process through the UAPI text protocol
// (IpcGetOperation/IpcSetOperation), one set operation per ConfigurePeers
// call however many peers it carries, never through the socket. The device
// lives and dies with the process: Close removes the interface.
package userspace

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

var (
	_ wgdev.Device          = (*Device)(nil)
	_ wgdev.RefusalReporter = (*Device)(nil)
)

// refusedQueue is how many refused handshake messages may wait for the agent: a
// join wave's worth; beyond it reports are dropped, and those peers wait
// for WireGuard's own retry.
const refusedQueue = 1024

// drainBeforeClose is how long a closing device goes on sending, with its
// TUN no longer read, so that the packet a read returned last goes out: a
// packet takes microseconds from the TUN to the socket on an idle host,
// milliseconds on a loaded one.
const drainBeforeClose = 50 * time.Millisecond

// Device is an embedded wireguard-go device.
type Device struct {
	*wgdev.Identity
	log  *slog.Logger
	dev  *device.Device
	tun  tun.Device // nil in unit tests' devices
	held *heldTUN   // reads of the TUN wait for the first peers; nil likewise
	// refused carries the refused handshake messages (newLogger); nil
	// for devices built without one (unit tests).
	refused chan wgdev.Refusal

	// uapi serves `wg` and wgctrl; nil when the device was built without one
	// (unit tests).
	uapi       net.Listener
	sockPath   string
	acceptDone chan struct{}

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// RefusedHandshakes delivers the endpoint of each handshake initiation and
// answer the device refused.
func (d *Device) RefusedHandshakes() <-chan wgdev.Refusal { return d.refused }

// SetPrivateKey replaces the device's private key through an in-process
// UAPI set.
func (d *Device) SetPrivateKey(k wgtypes.Key) error {
	if d.closed.Load() {
		return fmt.Errorf("set the private key of %s: %w", d.Name(), net.ErrClosed)
	}
	if err := d.dev.IpcSet("private_key=" + hex.EncodeToString(k[:]) + "\n"); err != nil {
		return fmt.Errorf("set the private key of %s: %w", d.Name(), err)
	}
	d.SetPublicKey(k.PublicKey())
	return nil
}

// Peers reads the live peers through an in-process UAPI get.
func (d *Device) Peers() ([]wgtypes.Peer, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("peers of %s: %w", d.Name(), net.ErrClosed)
	}
	var buf bytes.Buffer
	if err := d.dev.IpcGetOperation(&buf); err != nil {
		return nil, fmt.Errorf("peers of %s: %w", d.Name(), err)
	}
	peers, err := parsePeers(&buf)
	if err != nil {
		return nil, fmt.Errorf("peers of %s: %w", d.Name(), err)
	}
	return peers, nil
}

// ConfigurePeers applies changes in one in-process UAPI set. Like the kernel,
// wireguard-go applies lines in order and stops at the first bad one, so a
// failed call may have applied the changes before it; the agent's next
// reconcile pass repairs that.
func (d *Device) ConfigurePeers(changes []wgtypes.PeerConfig) error {
	if len(changes) == 0 {
		return nil
	}
	if d.closed.Load() {
		return fmt.Errorf("configure peers on %s: %w", d.Name(), net.ErrClosed)
	}
	var buf bytes.Buffer
	buf.Grow(len(changes) * 200) // about one peer's worth of lines each
	if err := writePeerConfigs(&buf, changes); err != nil {
		return fmt.Errorf("configure peers on %s: %w", d.Name(), err)
	}
	if err := d.dev.IpcSetOperation(&buf); err != nil {
		return fmt.Errorf("configure peers on %s: %w", d.Name(), err)
	}
	if d.held != nil {
		d.held.release()
	}
	return nil
}

// Close stops serving the UAPI socket, removes it, and closes the device,
// which removes the TUN interface. Close is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		var errs []error
		if d.uapi != nil {
			// ipc.UAPIListener.Close races its own inotify goroutine and can
			// report a pipe it has already closed; the listener is closed
			// either way.
			if err := d.uapi.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, fmt.Errorf("close uapi socket: %w", err))
			}
			<-d.acceptDone
			// The listener unlinks its path on close, but one adopted from a
			// file may not; make sure no stale socket is left for `wg` to find.
			if err := os.Remove(d.sockPath); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove %s: %w", d.sockPath, err))
			}
		}
		if d.held != nil && d.held.hold() {
			// What wireguard-go has read from the TUN goes out before the
			// device closes: a packet read and not yet sent would be lost,
			// and the TUN may outlive this device (docs/contract.md §6).
			// What comes next stays in the TUN for the next device.
			time.Sleep(drainBeforeClose)
		}
		d.dev.Close()
		if len(errs) > 0 {
			d.closeErr = fmt.Errorf("close %s: %w", d.Name(), errors.Join(errs...))
		}
		d.log.Debug("wireguard device closed", "device", d.Name())
	})
	return d.closeErr
}

// serveUAPI answers `wg` and wgctrl until the listener closes.
func (d *Device) serveUAPI() {
	defer close(d.acceptDone)
	for {
		c, err := d.uapi.Accept()
		if err != nil {
			if !d.closed.Load() {
				d.log.Warn("uapi socket stopped", "device", d.Name(), "err", err)
			}
			return
		}
		go d.dev.IpcHandle(c)
	}
}
