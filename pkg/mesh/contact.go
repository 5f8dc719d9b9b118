package mesh

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// First contact. A packet sent to a peer whose first handshake is pending
// waits in WireGuard's queue for that handshake, and goes when it completes,
// whichever end sent it — as long as the peer stays on the device (taking it
// off drops the queue). Three WireGuard facts shape the rest: it drops an
// initiation from a peer it does not have yet, and the end that sent it then
// sends no other for REKEY_TIMEOUT (5 s) — but it still answers the other
// end's initiation, and its queue goes out once that handshake completes;
// it answers an initiation from a peer it has at once; and two initiations
// that cross (each end answers the other's) are both refused, after which
// both ends wait 5 s — or, in wireguard-go, whose two handshake workers may
// take the other end's initiation and its answer to ours at once, end in a
// session both ends record but that carries one direction only, until the
// 15 s keepalive timeout. No look at the device tells that session from a
// good one, so a crossing must be prevented, not repaired.
//
// An initiation is dropped only by an end whose device took the peer after
// it was sent, so the end that takes the peer second always finds the other
// ready: a dropped initiation stalls one end, never both, and the other
// end's handshake delivers what it queued. Every pair therefore needs the end
// that took the peer second to start, and neither end knows which it is.
// The end whose record is newer starts when its device takes the peer (a
// persistent keepalive makes WireGuard send an initiation): the other end saw
// its record first and most likely took it first. The older end waits: it
// has the peer without its endpoint, so nothing it sends — its keepalive or
// its traffic — can start an initiation that crosses the newer end's; its
// traffic waits in the queue for the newer end's handshake, which brings the
// endpoint. It starts (endpoint and keepalive) only once it knows it took the
// peer second: its device refused an initiation from the peer's endpoint
// (lately, or from now on) — the newer end took this host first and waits,
// sending nothing for 5 s. That knowledge is exact. Silence proves nothing
// where the device could not refuse: a device that does not report refusals
// (the kernel's, an external wireguard-go), and hosts that may have taken
// this one before its device existed (writtenBeforeDevice; the others take
// it after, and their initiations meet the device). There the older end guesses, and keeps the endpoint while it
// waits (the kernel drops packets to a peer without one): if nothing came
// from the peer contactRetry after its device took it, the newer end either
// took this host first or has not taken it yet (then this end's initiation
// is refused, and the newer end's completes the handshake when it comes);
// either way this end starts — and if the newer end's device takes this host
// just then, or this end's traffic sends first, the two initiations cross.
// Either way, however the older end found the record (in a snapshot or as a
// watch event). Only such crossings remain; the end with the newer record
// restarts a handshake that crossed, and only then: a restart sends an
// initiation right behind this end's answer to the peer's, and a peer whose
// own initiation still waits for that answer — a handshake under way, slow
// on a loaded host — can take the two at once and keep a one-way session.
// It knows the initiations crossed when its device refused the peer's
// answer to its initiation (each end of a crossing refuses the other's): the
// peer took this end's initiation, so none of its own waits for an answer.
// A device that reports no refusals leaves a guess: something came from the
// peer, and a look crossingConfirm later still no handshake.
// After a bound the peer is left to WireGuard's own timers. Once a handshake
// exists nothing extra is sent: the peer gets its configured keepalive back.

// contact is one peer whose first handshake is being orchestrated.
type contact struct {
	since time.Time
	// starts: this end has started the handshake. Otherwise it holds its
	// keepalive back; startAt is when it starts if nothing came from the
	// peer by then (a guess), or zero: it starts when the device refuses
	// the peer's initiation, and has no endpoint until then (contactSpec),
	// or never — a quiet end's peers start.
	starts  bool
	startAt time.Time
	// counted: this contact is one of the initiating (it starts, or will).
	counted bool
	// restarts: this end starts again when the two initiations crossed.
	restarts bool
	started  time.Time     // restarts: when this end last started
	crossed  bool          // restarts: the device refused the peer's answer since
	next     time.Time     // restarts: when to look for a crossing next (zero: none due)
	wait     time.Duration // restarts, on a device without reports: the wait after next
	heard    bool          // restarts, likewise: the last look saw something from the peer
	// quiet: the peer has no endpoint until a handshake or quietGrace (a
	// host rotating its key, rotate.go).
	quiet bool
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
	// The newer record starts; but a peer this host dropped lately may
	// still hold a session with it and would not start a handshake: then
	// this end starts, whatever the revisions.
	at, droppedLately := c.dropped[p.PublicKey]
	droppedLately = droppedLately && now.Sub(at) < sessionAge
	// A peer that rotated its key switched its device before its record
	// was written: whoever applies the record knows the new key from then
	// on, so this end starts the handshake (the rotating host starts
	// none). A host of ikto 0.3.0 (an unsigned record) runs no first
	// contact and starts no handshake before it has traffic: this end
	// starts.
	c.endContact(p.PublicKey)
	switch {
	case c.selfRev > p.Revision || droppedLately || p.Retires != (wgtypes.Key{}) || !p.Record.Signed():
		c.initiate(p.PublicKey, now, droppedLately)
	case c.initiating >= maxInitiating:
	case c.refusedLately(p.Endpoint, now):
		c.log.Debug("first contact: the peer's initiation was refused before; starting the handshake", "public_key", p.PublicKey.String())
		c.contacts[p.PublicKey] = &contact{since: now, starts: true, counted: true}
		c.initiating++
	case !c.reportsRefusals() || c.writtenBeforeDevice(p):
		c.contacts[p.PublicKey] = &contact{since: now, startAt: now.Add(contactRetry), counted: true}
		c.initiating++
	default:
		c.contacts[p.PublicKey] = &contact{since: now, counted: true}
		c.initiating++
	}
}

// writtenBeforeDevice is whether p's host may have taken this one and sent
// an initiation before this host's device was there, so that no refusal
// will come. It sends only after writing its own record and reading this
// host's, so only if both records were written before the device opened. A
// record's seq is its writer's clock (µs) just before the write, which may
// land much later (a busy server): a newer record's seq alone can predate
// the device although the record came after this host's own. The agent
// opens the device before it claims, so this host's own record comes after
// the device, and no newer record gets the guess; a device opened later (or
// made again) gives it to records older than the device.
func (c *Controller) writtenBeforeDevice(p peer.Accepted) bool {
	return time.UnixMicro(int64(max(p.Seq, c.selfSeq))).Before(c.opened)
}

// reportsRefusals is whether the device says which handshake messages it
// refused.
func (c *Controller) reportsRefusals() bool {
	_, ok := c.dev.(wgdev.RefusalReporter)
	return ok
}

// refusals is the channel of the device's refused handshake messages; nil
// (never ready) for a device that does not report them.
func (c *Controller) refusals() <-chan wgdev.Refusal {
	if r, ok := c.dev.(wgdev.RefusalReporter); ok {
		return r.RefusedHandshakes()
	}
	return nil
}

// refusedLately is whether the device refused an initiation from ep within
// refusedWithin.
func (c *Controller) refusedLately(ep netip.AddrPort, now time.Time) bool {
	at, ok := c.refused[ep]
	return ok && ep.IsValid() && now.Sub(at) < refusedWithin
}

// noteRefused notes that the device refused an initiation: a peer with
// that endpoint took this host first and waits for this end (startRefused
// starts it; a peer not taken yet starts when it is). A refused answer is a
// crossing (crossedAnswer).
func (c *Controller) noteRefused(r wgdev.Refusal) {
	if r.Answer {
		c.crossedAnswer(r)
		return
	}
	// Anyone who can send to the port can make the device refuse: when the
	// notes are full the oldest goes, so that a flood from addresses no peer
	// has ages out instead of keeping a peer's refusal from being noted.
	var oldest netip.AddrPort
	for ep, at := range c.refused {
		switch {
		case r.At.Sub(at) >= refusedWithin:
			delete(c.refused, ep)
		case !oldest.IsValid() || at.Before(c.refused[oldest]):
			oldest = ep
		}
	}
	if _, ok := c.refused[r.From]; !ok && len(c.refused) >= maxRefusals {
		delete(c.refused, oldest)
	}
	c.refused[r.From] = r.At
}

// crossedAnswer notes a refused answer from a peer whose handshake this end
// restarts: its initiation and this end's crossed (this end answered the
// peer's, so it no longer waits for an answer to its own). Its next look,
// crossingConfirm later, restarts it if no handshake came meanwhile.
func (c *Controller) crossedAnswer(r wgdev.Refusal) {
	for k, ct := range c.contacts {
		if !ct.restarts || r.At.Before(ct.started) {
			continue
		}
		if p, ok := c.table.Peer(k); ok && p.Endpoint == r.From {
			ct.crossed = true
			if at := r.At.Add(crossingConfirm); ct.next.IsZero() || at.Before(ct.next) {
				ct.next = at
			}
		}
	}
}

// startRefused starts the pending first contacts that wait for the other
// end although the device refused the peer's initiation lately, and
// reports whether it started any. A waiting peer is on the device without
// its endpoint, and its traffic may have spent WireGuard's one initiation
// per 5 s on it already (the send fails, the slot is gone); so the peer is
// started by taking it off and putting it back with its endpoint and the
// contact keepalive, one device call: its handshake starts at once, and
// what its traffic queued since the device took it — the moment between
// the refusal and its report, a few milliseconds — is dropped instead of
// waiting for the newer end's retry. A guessing peer has its endpoint and
// only gets its keepalive: the caller's next pass writes it.
func (c *Controller) startRefused(now time.Time) bool {
	if len(c.refused) == 0 {
		return false
	}
	started := false
	var start []wgtypes.Key
	for k, ct := range c.contacts {
		if ct.starts || ct.quiet {
			continue
		}
		if p, ok := c.table.Peer(k); ok && c.refusedLately(p.Endpoint, now) {
			c.log.Debug("first contact: the peer's initiation was refused; starting the handshake", "public_key", k.String())
			waited := ct.startAt.IsZero() // without its endpoint
			ct.starts, ct.startAt = true, time.Time{}
			c.respec(k)
			started = true
			if waited {
				start = append(start, k)
			}
		}
	}
	if len(start) > 0 {
		if err := c.rec.Reset(start); err != nil {
			c.log.Warn("first contact: starting handshakes failed", "peers", len(start), "err", err)
		}
	}
	return started
}

// initiate makes this end start the first handshake with k, and start it
// again should two initiations cross — at once, unless maxInitiating
// handshakes are already being started (or are to be started, by an older
// end that hears nothing): a host that joins or restarts in a large fleet
// starts a few hundred at a time, never a burst of thousands (each a
// Curve25519 computation, each retried for 90 s when the peer is down).
// Past that, a peer new to this host is left to traffic: it has no session
// with this host, so whatever it sends starts a handshake. A peer owed the
// handshake (owed: it may hold a session with a device of this host that is
// gone, and sends into it, starting nothing, until its timers give up)
// waits its turn instead, and starts when a contact ends (startWaiting).
// Either is configured as usual meanwhile: endpoint, configured keepalive.
func (c *Controller) initiate(k wgtypes.Key, now time.Time, owed bool) {
	c.endContact(k)
	if c.initiating >= maxInitiating {
		if _, ok := c.waitingFor[k]; owed && !ok { // waiting already: keeps its turn
			c.waiting = append(c.waiting, waitingContact{key: k, since: now})
			c.waitingFor[k] = struct{}{}
		}
		return
	}
	ct := &contact{since: now, starts: true, counted: true, restarts: true, started: now}
	if !c.reportsRefusals() {
		ct.next, ct.wait = now.Add(contactRetry), 2*contactRetry
	}
	c.contacts[k] = ct
	c.initiating++
}

// restoreContact starts the handshake with a peer put back from the
// snapshot, unless the device has a session with it (a kernel device that
// outlived the agent). The device before this one had that session, and the
// peer keeps sending into it, unanswered, until its own timers give up (up
// to 15 s): it starts nothing sooner, so this end does.
// Past maxInitiating at once the rest are left to their own timers, as
// for any burst of new peers (initiate).
func (c *Controller) restoreContact(k wgtypes.Key, now time.Time, sessions map[wgtypes.Key]time.Time) {
	if hs, ok := sessions[k]; ok && now.Sub(hs) < sessionAge {
		return
	}
	// Its session was dropped with the device before: the bucket's first
	// pass, which finds the peer new, decides the same (beginContact).
	c.dropped[k] = now
	c.initiate(k, now, true)
}

// waitingContact is a peer whose handshake this end owes and has not
// started yet: initiate found no room.
type waitingContact struct {
	key   wgtypes.Key
	since time.Time
}

// startWaiting starts the waiting peers' handshakes while there is room, in
// the order they were owed, and reports whether it started any: their
// contact configuration is for the next pass to write, or, before the
// bucket's first pass (restored peers), written here to the peers the
// device has, as Restore wrote the first ones. A peer that left the table,
// has a contact already, or had a handshake since it began to wait (it
// started one itself) is passed over.
func (c *Controller) startWaiting(now time.Time, seen map[wgtypes.Key]peerSeen) bool {
	started := map[wgtypes.Key]reconcile.Spec{}
	for len(c.waiting) > 0 && c.initiating < maxInitiating {
		w := c.waiting[0]
		c.waiting = c.waiting[1:]
		delete(c.waitingFor, w.key)
		if _, ok := c.contacts[w.key]; ok || !seen[w.key].handshake.Before(w.since) {
			continue
		}
		p, ok := c.table.Peer(w.key)
		if !ok && !c.loaded {
			p, ok = c.restored[w.key]
		}
		if !ok {
			continue
		}
		c.initiate(w.key, now, true)
		s := c.spec(p)
		if c.loaded {
			c.rec.Set(s)
		}
		started[w.key] = s
	}
	if len(c.waiting) == 0 {
		c.waiting = nil // let the array go once a burst has been worked off
	}
	if len(started) > 0 && !c.loaded {
		// Only what the device has: while NATS cannot be asked no peer
		// is added (a device made again holds none yet).
		if err := c.rec.Put(started); err != nil {
			c.log.Warn("first contact: starting restored peers' handshakes failed", "peers", len(started), "err", err)
		}
	}
	return len(started) > 0
}

// endContacts forgets every first contact, started or waiting.
func (c *Controller) endContacts() {
	clear(c.contacts)
	c.initiating, c.waiting = 0, nil
	clear(c.waitingFor)
}

// endContact forgets k's first contact, if any.
func (c *Controller) endContact(k wgtypes.Key) {
	if ct, ok := c.contacts[k]; ok {
		if ct.counted {
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
	case ct.quiet:
		s.Endpoint = netip.AddrPort{}
	case ct.starts && s.Keepalive == 0:
		s.Keepalive = contactKeepalive
	case !ct.starts && ct.startAt.IsZero():
		// Waiting to learn which end took the peer second: no endpoint,
		// so neither a keepalive nor this end's traffic can send an
		// initiation that crosses the other end's. WireGuard queues the
		// traffic; the other end's handshake (or this end's start)
		// sends it.
		s.Keepalive = 0
		s.Endpoint = netip.AddrPort{}
	case !ct.starts:
		// Guessing: the endpoint, for traffic on a device that drops
		// packets to a peer without one, but no keepalive until the
		// guess.
		s.Keepalive = 0
	}
	return s
}

// checkContacts reads the device's peers and moves each pending first
// contact on: done (a handshake happened: the peer gets its usual
// configuration), started (nothing came from the peer by startAt), started
// again (crossed initiations, seen at a restarting end's next look), or
// handed to WireGuard (past contactBound, or a quiet end past its grace);
// then starts waiting ones in the room that freed up. It returns whether
// anything changed; the caller's next pass writes it.
func (c *Controller) checkContacts(now time.Time) bool {
	if len(c.contacts) == 0 && len(c.waiting) == 0 {
		return false
	}
	changed := c.startRefused(now)
	seen := c.seen()
	var restart []wgtypes.Key
	for k, ct := range c.contacts {
		done := seen[k].handshake.After(ct.since.Add(-time.Second))
		switch {
		case done, now.Sub(ct.since) >= ct.bound():
			if done {
				c.ended.Handshake++
			} else {
				c.ended.Bound++
				c.log.Debug("first contact: no handshake yet; leaving the peer to WireGuard", "public_key", k.String(),
					"started", ct.starts, "after", now.Sub(ct.since).Round(time.Millisecond))
			}
			c.endContact(k)
			c.respec(k)
			changed = true
			if !done && ct.starts {
				// WireGuard would go on retrying the keepalives queued
				// while the contact ran for 90 s (REKEY_ATTEMPT_TIME): a
				// peer that is down costs a handshake every 5 s. Taken off
				// and put back with its usual configuration, it stays
				// quiet until traffic asks for it.
				restart = append(restart, k)
			}
		case !ct.starts && !ct.startAt.IsZero() && !now.Before(ct.startAt):
			// Something came: the other end started, and its handshake
			// is under way. Nothing came: it took this host first and its
			// initiation was dropped, or it has not taken this host yet
			// and will start when it does.
			ct.startAt = time.Time{}
			if !seen[k].heard {
				c.log.Debug("first contact: nothing from the peer; starting the handshake", "public_key", k.String())
				ct.starts = true
				c.respec(k)
				changed = true
			}
		case ct.restarts && ct.crossed && !now.Before(ct.next):
			// The device refused the peer's answer to this end's
			// initiation, and still no handshake: the initiations
			// crossed. The peer took this end's, so no initiation of its
			// own waits for an answer: the restart's can only be answered.
			c.log.Debug("first contact: initiations crossed (the peer's answer was refused); starting again", "public_key", k.String())
			restart = append(restart, k)
			c.restarts++
			ct.started, ct.crossed, ct.next = now, false, time.Time{}
		case ct.restarts && !ct.next.IsZero() && !now.Before(ct.next):
			// A device that reports no refusals (only there is a look due
			// without a refused answer) leaves a guess. Something came
			// from the peer at an earlier look, and still no handshake:
			// most likely its initiation crossed ours (a handshake under
			// way completes within a round trip — unless a loaded host
			// takes longer, and then the restart makes the crossing).
			// Nothing came: it does not have this host yet, and starts
			// the handshake when it does — a restart now would only drop
			// what waits for it.
			switch {
			case seen[k].heard && ct.heard:
				c.log.Debug("first contact: initiations crossed; starting again", "public_key", k.String())
				restart = append(restart, k)
				c.restarts++
				ct.heard = false // the peer put back has heard nothing yet
			case seen[k].heard:
				// Look again soon: a crossing stalls both ends, and
				// what each sends meanwhile, until the restart.
				ct.heard = true
				ct.next = now.Add(crossingConfirm)
				continue
			}
			ct.next = now.Add(ct.wait/2 + rand.N(ct.wait))
			ct.wait = min(2*ct.wait, contactRetryMax)
		}
	}
	if len(restart) > 0 {
		if err := c.rec.Reset(restart); err != nil {
			c.log.Warn("first contact: restarting handshakes failed", "peers", len(restart), "err", err)
		}
	}
	if c.startWaiting(now, seen) {
		changed = true
	}
	return changed
}

// bound is how long the contact runs without a handshake before the peer is
// left to WireGuard.
func (ct *contact) bound() time.Duration {
	if ct.quiet {
		return quietGrace
	}
	return contactBound
}

// contactWait is how long the loop waits before the next checkContacts: until
// the first pending contact is due, and never less than contactPollMin (than
// crossingConfirm while a crossing is suspected). A
// handshake that completes meanwhile needs no haste: the contact keepalive,
// a held-back keepalive and a quiet end's missing endpoint do no harm until
// then.
func (c *Controller) contactWait(now time.Time) time.Duration {
	var due time.Time
	floor := contactPollMin
	for _, ct := range c.contacts {
		if ct.restarts && (ct.heard || ct.crossed) {
			floor = crossingConfirm // a crossing, restarted at once
		}
		at := ct.since.Add(ct.bound())
		if ct.restarts && !ct.next.IsZero() && ct.next.Before(at) {
			at = ct.next
		}
		if !ct.starts && !ct.startAt.IsZero() && ct.startAt.Before(at) {
			at = ct.startAt
		}
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	return max(due.Sub(now), floor)
}

// respec hands the reconciler the peer's usual configuration again.
func (c *Controller) respec(k wgtypes.Key) {
	if p, ok := c.table.Peer(k); ok {
		c.rec.Set(c.spec(p))
	}
}

// sessions is the time of each peer's last handshake on the device.
func (c *Controller) sessions() map[wgtypes.Key]time.Time {
	seen := c.seen()
	out := make(map[wgtypes.Key]time.Time, len(seen))
	for k, s := range seen {
		out[k] = s.handshake
	}
	return out
}

// peerSeen is what the device says of a peer: when its last handshake
// completed, and whether anything came from it at all (a handshake message
// counts).
type peerSeen struct {
	handshake time.Time
	heard     bool
}

// seen reads every peer of the device (a dump: call it only when due).
func (c *Controller) seen() map[wgtypes.Key]peerSeen {
	peers, err := c.dev.Peers()
	out := make(map[wgtypes.Key]peerSeen, len(peers))
	if err != nil {
		return out
	}
	for _, p := range peers {
		out[p.PublicKey] = peerSeen{handshake: p.LastHandshakeTime, heard: p.ReceiveBytes > 0}
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
