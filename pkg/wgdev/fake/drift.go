package fake

import (
	"bytes"
	"fmt"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// These helpers change the device behind the agent's back, as an operator
// running `wg set` or a crashed previous agent would. They are not counted as
// calls and ignore FailNext.

// SetPeers replaces every peer with copies of peers (counters, handshake time
// and all), as if the device had been configured by someone else.
func (d *Device) SetPeers(peers []wgtypes.Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.peers)
	clear(d.owners)
	for i := range peers {
		d.putLocked(&peers[i])
	}
}

// SetPeer adds or replaces one peer with a copy of p; use it to change a
// peer's endpoint or allowed IPs behind the agent's back, or to fake its
// handshake time and byte counters.
func (d *Device) SetPeer(p wgtypes.Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.peers[p.PublicKey]; ok {
		d.removeLocked(old)
	}
	d.putLocked(&p)
}

// RemovePeerBehindBack deletes the peer with key k, returning an error if it
// was not there.
func (d *Device) RemovePeerBehindBack(k wgtypes.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[k]
	if !ok {
		return fmt.Errorf("device %s: remove peer %s: %w", d.Name(), k, errNoSuchPeer)
	}
	d.removeLocked(p)
	return nil
}

func (d *Device) putLocked(p *wgtypes.Peer) {
	c := clonePeer(p)
	allowed := c.AllowedIPs
	c.AllowedIPs = nil
	d.peers[c.PublicKey] = &c
	for _, n := range allowed {
		d.addAllowedIPLocked(&c, n)
	}
}

func (d *Device) snapshotLocked() []wgtypes.Peer {
	out := make([]wgtypes.Peer, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, clonePeer(p))
	}
	slices.SortFunc(out, func(a, b wgtypes.Peer) int {
		return bytes.Compare(a.PublicKey[:], b.PublicKey[:])
	})
	return out
}
