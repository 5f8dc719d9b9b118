package mesh

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// devicePeer is k as the device has it.
func devicePeer(t *testing.T, w *world, k wgtypes.Key) (wgtypes.Peer, bool) {
	t.Helper()
	peers, err := w.dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.PublicKey == k {
			return p, true
		}
	}
	return wgtypes.Peer{}, false
}

// handshake makes the fake device report a handshake with k at t.
func handshake(t *testing.T, w *world, k wgtypes.Key, at time.Time) {
	t.Helper()
	p, ok := devicePeer(t, w, k)
	if !ok {
		t.Fatalf("peer %s not on the device", k)
	}
	p.LastHandshakeTime = at
	w.dev.SetPeer(p)
}

// The newer record of a pair initiates: its new peer gets a keepalive, which
// makes WireGuard start a handshake at once. The older one cannot initiate:
// its new peer has no endpoint until a handshake. A handshake ends both, and
// the peers get their usual configuration back.
func TestFirstContactRoles(t *testing.T) {
	w := newWorld(t)
	older, olderKey := hostEntry(t, 2, 2)  // joined before us: we initiate
	newer, newerKey := hostEntry(t, 3, 10) // joined after us: it initiates
	o := w.snapshot(w.selfEntry(5), older, newer)
	if len(o.Contacts) != 2 {
		t.Fatalf("contacts %v, want both peers", o.Contacts)
	}
	if p, _ := devicePeer(t, w, olderKey); p.PersistentKeepaliveInterval != contactKeepalive || p.Endpoint == nil {
		t.Errorf("initiator's peer: keepalive %s, endpoint %v; want %s and the endpoint", p.PersistentKeepaliveInterval, p.Endpoint, contactKeepalive)
	}
	if p, _ := devicePeer(t, w, newerKey); p.Endpoint != nil || p.PersistentKeepaliveInterval != 0 {
		t.Errorf("responder's peer: endpoint %v, keepalive %s; want none", p.Endpoint, p.PersistentKeepaliveInterval)
	}

	now := time.Now()
	handshake(t, w, olderKey, now)
	handshake(t, w, newerKey, now)
	if !w.ctl.checkContacts(now) {
		t.Fatal("checkContacts saw no change after both handshakes")
	}
	if o := w.ctl.Pass(false); len(o.Contacts) != 0 {
		t.Fatalf("contacts after the handshakes: %v", o.Contacts)
	}
	if p, _ := devicePeer(t, w, olderKey); p.PersistentKeepaliveInterval != 0 {
		t.Errorf("initiator's peer keeps keepalive %s after its handshake; want the configured 0", p.PersistentKeepaliveInterval)
	}
	if p, _ := devicePeer(t, w, newerKey); p.Endpoint == nil || p.Endpoint.AddrPort() != netip.MustParseAddrPort("198.18.0.20:51820") {
		t.Errorf("responder's peer endpoint %v after its handshake; want 198.18.0.20:51820", p.Endpoint)
	}
}

// Without a handshake the initiator starts again on a short schedule (a
// reset: one device call taking the peer off and back on), then leaves the
// peer to WireGuard; the responder gets its endpoint after its grace.
func TestFirstContactRetriesThenGivesUp(t *testing.T) {
	w := newWorld(t)
	older, olderKey := hostEntry(t, 2, 2)
	newer, newerKey := hostEntry(t, 3, 10)
	w.snapshot(w.selfEntry(5), older, newer)
	start := w.ctl.contacts[olderKey].since
	calls := w.dev.Calls()
	resets := 0
	for at := start; at.Before(start.Add(contactBound)); at = at.Add(w.ctl.contactWait(at)) {
		w.ctl.checkContacts(at)
		if w.dev.Calls() > calls {
			resets += w.dev.Calls() - calls
			calls = w.dev.Calls()
		}
	}
	if resets < 3 || resets > 8 {
		t.Errorf("%d handshake restarts in %s, want a few (from %s, doubling to %s)", resets, contactBound, contactRetry, contactRetryMax)
	}
	calls = w.dev.Calls()
	w.ctl.checkContacts(start.Add(contactBound))
	if w.dev.Calls() != calls+1 {
		t.Errorf("giving up made %d device calls, want 1 (the peer put back quiet, its queued keepalives dropped)", w.dev.Calls()-calls)
	}
	w.ctl.Pass(false)
	if _, pending := w.ctl.contacts[olderKey]; pending {
		t.Error("the initiator still orchestrates after contactBound")
	}
	if _, pending := w.ctl.contacts[newerKey]; !pending {
		t.Error("the responder gave up before its grace")
	}
	w.ctl.checkContacts(start.Add(responderGrace))
	w.ctl.Pass(false)
	if p, _ := devicePeer(t, w, newerKey); p.Endpoint == nil || len(w.ctl.contacts) != 0 {
		t.Errorf("after the grace: responder's endpoint %v, contacts %v", p.Endpoint, w.ctl.contacts)
	}
	if p, _ := devicePeer(t, w, olderKey); p.PersistentKeepaliveInterval != 0 {
		t.Errorf("after the bound the initiator's peer keeps keepalive %s", p.PersistentKeepaliveInterval)
	}
}

// A peer the device already has a live session with (a device that outlived
// its agent) is not orchestrated.
func TestNoFirstContactWithALiveSession(t *testing.T) {
	w := newWorld(t)
	a, aKey := hostEntry(t, 2, 2)
	if err := w.dev.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: aKey, AllowedIPs: []net.IPNet{wgtest.IPNet(t, "fd10:2::/48")}}}); err != nil {
		t.Fatal(err)
	}
	handshake(t, w, aKey, time.Now().Add(-time.Minute))
	if o := w.snapshot(w.selfEntry(5), a); len(o.Contacts) != 0 {
		t.Fatalf("contacts %v for a peer with a live session", o.Contacts)
	}
}

// A peer this host dropped lately (its record deleted, then written again)
// may still hold a session with this host and will not start a handshake:
// this end initiates when it takes the peer back, whatever the revisions.
func TestFirstContactAfterADropIsOurs(t *testing.T) {
	w := newWorld(t)
	victimPriv := wgtest.PrivateKey(t)
	victimKey := victimPriv.PublicKey()
	prefix := netip.MustParsePrefix("fd10:2::/48")
	victim := signedEntry(victimPriv, "victim", prefix, 10) // newer than us: normally it initiates
	w.snapshot(w.selfEntry(5), victim)
	handshake(t, w, victimKey, time.Now())
	w.ctl.checkContacts(time.Now())
	w.ctl.Pass(false)
	if o := w.update(peer.Write{Key: victim.Key, Revision: 11, Deleted: true}); len(o.Plan.Remove) != 1 {
		t.Fatalf("victim's record deleted: plan %+v, want it removed", o.Plan)
	}
	back := signedEntry(victimPriv, "victim", prefix, 12) // the victim claims again
	o := w.update(back)
	ct, pending := w.ctl.contacts[victimKey]
	if !pending || !ct.initiator {
		t.Fatalf("contact with the victim taken back: %+v (pending %v), want this end to initiate", ct, pending)
	}
	if p, _ := devicePeer(t, w, victimKey); p.Endpoint == nil || len(o.Contacts) != 1 {
		t.Errorf("victim taken back without its endpoint (%v) or contact (%v)", p.Endpoint, o.Contacts)
	}
}

// Pending first contacts are checked when one is due, not on a fast tick: a
// responder alone waits for its grace; an initiator's restart brings the
// check forward, and a timer armed for later is re-armed sooner. No check
// comes sooner than contactPollMin after another.
func TestFirstContactChecksWhenDue(t *testing.T) {
	w := newWorld(t)
	newer, newerKey := hostEntry(t, 3, 10)
	w.snapshot(w.selfEntry(5), newer)
	ct, ok := w.ctl.contacts[newerKey]
	if !ok || ct.initiator {
		t.Fatalf("want the newer record's host as a pending responder, got %+v", ct)
	}
	now := ct.since
	if got := w.ctl.contactWait(now); got != responderGrace {
		t.Errorf("a lone responder: next check in %s, want its grace %s", got, responderGrace)
	}
	armed := w.ctl.armContacts(contactTimer{}, now)
	if !armed.at.Equal(now.Add(responderGrace)) {
		t.Errorf("timer armed for %s, want %s", armed.at.Sub(now), responderGrace)
	}

	older, olderKey := hostEntry(t, 2, 2)
	w.update(older)
	if ct := w.ctl.contacts[olderKey]; ct == nil || !ct.initiator {
		t.Fatalf("want the older record's host as a pending initiator, got %+v", ct)
	}
	rearmed := w.ctl.armContacts(armed, now)
	if rearmed.c == armed.c || rearmed.at.Sub(now) > contactRetry+time.Second {
		t.Errorf("an initiator's restart did not bring the check forward: armed for %s", rearmed.at.Sub(now))
	}
	if again := w.ctl.armContacts(rearmed, now); again.c != rearmed.c {
		t.Error("a timer due soon enough was replaced")
	}
	if got := w.ctl.contactWait(now.Add(time.Hour)); got != contactPollMin {
		t.Errorf("overdue contacts: next check in %s, want the floor %s", got, contactPollMin)
	}
	delete(w.ctl.contacts, newerKey)
	delete(w.ctl.contacts, olderKey)
	if off := w.ctl.armContacts(rearmed, now); off.c != nil {
		t.Error("no contact pending, but the timer stays armed")
	}
}

// A peer that joins a running mesh cannot have a session with this device
// yet: its first contact begins without reading the device (a dump of every
// peer), so a join wave costs no device reads per join.
func TestFirstContactOfAJoinReadsNoDevice(t *testing.T) {
	w := newWorld(t)
	older, _ := hostEntry(t, 2, 2)
	w.snapshot(w.selfEntry(5), older)
	reads := w.dev.Reads()
	for i := range 20 {
		joined, k := hostEntry(t, 10+i, uint64(10+i))
		w.update(joined)
		if _, pending := w.ctl.contacts[k]; !pending {
			t.Fatalf("join %d: no first contact begun", i)
		}
	}
	if got := w.dev.Reads() - reads; got != 0 {
		t.Errorf("20 joins read the device %d times, want 0", got)
	}
}

// A host that starts with more peers than maxInitiating starts that many
// first handshakes itself; the rest are ordinary peers (endpoint, usual
// keepalive) left to traffic. As started contacts end, the count frees up.
func TestFirstContactsAreBounded(t *testing.T) {
	w := newWorld(t)
	entries := []peer.Write{w.selfEntry(1000)}
	for i := range maxInitiating + 44 {
		e, _ := hostEntry(t, 100+i, uint64(10+i))
		entries = append(entries, e)
	}
	w.snapshot(entries...)
	if w.ctl.initiating != maxInitiating || len(w.ctl.contacts) != maxInitiating {
		t.Fatalf("initiating %d, contacts %d; want %d of each", w.ctl.initiating, len(w.ctl.contacts), maxInitiating)
	}
	peers, err := w.dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	keepalive := 0
	for _, p := range peers {
		if p.Endpoint == nil {
			t.Fatalf("peer %s has no endpoint: this host is the newer record, it never waits as a responder", p.PublicKey)
		}
		if p.PersistentKeepaliveInterval != 0 {
			keepalive++
		}
	}
	if len(peers) != maxInitiating+44 || keepalive != maxInitiating {
		t.Errorf("%d peers, %d with the contact keepalive; want %d and %d", len(peers), keepalive, maxInitiating+44, maxInitiating)
	}
	var since time.Time
	for _, ct := range w.ctl.contacts {
		since = ct.since
	}
	w.ctl.checkContacts(since.Add(contactBound))
	if w.ctl.initiating != 0 || len(w.ctl.contacts) != 0 {
		t.Errorf("after the bound: initiating %d, contacts %d; want 0", w.ctl.initiating, len(w.ctl.contacts))
	}
}
