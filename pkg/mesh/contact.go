package mesh

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

// First contact. WireGuard drops an initiation from a peer it does not know
// yet and retries only after REKEY_TIMEOUT (5 s); two ends that initiate at
// once consume each other's initiation, reject both responses and wait 5 s
// too. So the controller orchestrates the first handshake with each peer new
// to its device: exactly one end of a pair initiates — the one whose record
// is newer (it just joined or restarted, so the other end may not know it
// yet) — and the other end cannot initiate: it has the peer without an
// endpoint until a handshake happens (WireGuard learns the endpoint from the
// initiation) or a grace ends. The initiator starts at once (turning on a
// persistent keepalive makes WireGuard send one) and, while no handshake is
// seen, starts again on a short jittered schedule by resetting the peer,
// which clears WireGuard's per-peer rate limit; after a bound it leaves the
// peer to WireGuard's own timers. Once a handshake exists nothing extra is
// sent: the peer gets its configured keepalive back.

// contact is one peer whose first handshake is being orchestrated.
type contact struct {
	initiator bool
	since     time.Time
	next      time.Time     // initiator: when to start again
	wait      time.Duration // initiator: the wait after next
}

// beginContact notes that p is new to this host's table. A peer the device
// already has a session with (a device that outlived the agent) needs no
// orchestration.
func (c *Controller) beginContact(p peer.Accepted, now time.Time, sessions func() map[wgtypes.Key]time.Time) {
	// Only a peer the device already has can have a session: the device is
	// read (a dump of every peer) only then, or when what it holds is not
	// known yet, never for a peer that just joined a running mesh.
	if on, known := c.rec.OnDevice(p.PublicKey); on || !known {
		if hs, ok := sessions()[p.PublicKey]; ok && now.Sub(hs) < sessionAge {
			return
		}
	}
	// The newer record initiates; but a peer this host dropped lately may
	// still hold a session with it and would not start a handshake: then
	// this end starts it, whatever the revisions.
	at, droppedLately := c.dropped[p.PublicKey]
	droppedLately = droppedLately && now.Sub(at) < sessionAge
	// A peer that rotated its key switched its device before its record
	// was written: whoever applies the record knows the new key from then
	// on, so this end starts the handshake (the rotating host starts
	// none).
	if c.selfRev > p.Revision || droppedLately || p.Retires != (wgtypes.Key{}) {
		c.initiate(p.PublicKey, now)
		return
	}
	c.endContact(p.PublicKey)
	c.contacts[p.PublicKey] = &contact{since: now}
}

// initiate makes this end start the first handshake with k — unless
// maxInitiating handshakes are already being started: a host that joins or
// restarts in a large fleet then starts the first ones itself and leaves the
// rest to traffic and WireGuard, instead of a burst of thousands of
// handshakes (each a Curve25519 computation, each retried for 90 s when the
// peer is down).
func (c *Controller) initiate(k wgtypes.Key, now time.Time) {
	c.endContact(k)
	if c.initiating >= maxInitiating {
		return
	}
	c.contacts[k] = &contact{initiator: true, since: now, next: now.Add(contactRetry), wait: 2 * contactRetry}
	c.initiating++
}

// endContact forgets k's first contact, if any.
func (c *Controller) endContact(k wgtypes.Key) {
	if ct, ok := c.contacts[k]; ok {
		if ct.initiator {
			c.initiating--
		}
		delete(c.contacts, k)
	}
}

// contactSpec is how a peer in first contact is configured.
func (c *Controller) contactSpec(s reconcile.Spec) reconcile.Spec {
	ct, ok := c.contacts[s.PublicKey]
	switch {
	case !ok:
	case ct.initiator && s.Keepalive == 0:
		s.Keepalive = contactKeepalive
	case !ct.initiator:
		s.Endpoint = netip.AddrPort{}
	}
	return s
}

// checkContacts reads the device's handshakes and moves each pending first
// contact on: done (a handshake happened: the peer gets its usual
// configuration), started again (an initiator past its next time), or handed
// to WireGuard (an initiator past contactBound, a responder past its grace).
// It returns whether anything changed; the caller's next pass writes it.
func (c *Controller) checkContacts(now time.Time) bool {
	if len(c.contacts) == 0 {
		return false
	}
	hs := c.sessions()
	var restart []wgtypes.Key
	changed := false
	for k, ct := range c.contacts {
		done := hs[k].After(ct.since.Add(-time.Second))
		switch {
		case done, ct.initiator && now.Sub(ct.since) >= contactBound, !ct.initiator && now.Sub(ct.since) >= responderGrace:
			if !done {
				c.log.Debug("first contact: no handshake yet; leaving the peer to WireGuard", "public_key", k.String(),
					"initiator", ct.initiator, "after", now.Sub(ct.since).Round(time.Millisecond))
			}
			c.endContact(k)
			c.respec(k)
			changed = true
			if !done && ct.initiator {
				// WireGuard would go on retrying the keepalives queued
				// while the contact ran for 90 s (REKEY_ATTEMPT_TIME): a
				// peer that is down costs a handshake every 5 s. Taken off
				// and put back with its usual configuration, it stays
				// quiet until traffic asks for it.
				restart = append(restart, k)
			}
		case ct.initiator && !now.Before(ct.next):
			restart = append(restart, k)
			ct.next = now.Add(ct.wait/2 + rand.N(ct.wait))
			ct.wait = min(2*ct.wait, contactRetryMax)
		}
	}
	if len(restart) > 0 {
		if err := c.rec.Reset(restart); err != nil {
			c.log.Warn("first contact: restarting handshakes failed", "peers", len(restart), "err", err)
		}
	}
	return changed
}

// contactWait is how long the loop waits before the next checkContacts: until
// the first pending contact is due, and never less than contactPollMin. A
// handshake that completes meanwhile needs no haste: the initiator's
// keepalive and the responder's missing endpoint do no harm until then.
func (c *Controller) contactWait(now time.Time) time.Duration {
	var due time.Time
	for _, ct := range c.contacts {
		at := ct.since.Add(responderGrace)
		if ct.initiator {
			at = ct.since.Add(contactBound)
			if ct.next.Before(at) {
				at = ct.next
			}
		}
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	return max(due.Sub(now), contactPollMin)
}

// respec hands the reconciler the peer's usual configuration again.
func (c *Controller) respec(k wgtypes.Key) {
	if p, ok := c.table.Peer(k); ok {
		c.rec.Set(c.spec(p))
	}
}

// sessions is the time of each peer's last handshake on the device.
func (c *Controller) sessions() map[wgtypes.Key]time.Time {
	peers, err := c.dev.Peers()
	out := make(map[wgtypes.Key]time.Time, len(peers))
	if err != nil {
		return out
	}
	for _, p := range peers {
		out[p.PublicKey] = p.LastHandshakeTime
	}
	return out
}

// pendingContacts is when each pending first contact began, for Outcomes.
func (c *Controller) pendingContacts() map[wgtypes.Key]time.Time {
	if len(c.contacts) == 0 {
		return nil
	}
	out := make(map[wgtypes.Key]time.Time, len(c.contacts))
	for k, ct := range c.contacts {
		out[k] = ct.since
	}
	return out
}

// The handshake states /v1/status shows per peer.
const (
	HandshakeStateEstablished = "established"
	HandshakeStatePending     = "pending"
	HandshakeStateStale       = "stale"
)

// SessionLive reports whether a handshake at hs still carries a session at now.
func SessionLive(hs, now time.Time) bool { return !hs.IsZero() && now.Sub(hs) < sessionAge }
