package mesh

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
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

// heardFrom makes the fake device report that something came from k.
func heardFrom(t *testing.T, w *world, k wgtypes.Key) {
	t.Helper()
	p, ok := devicePeer(t, w, k)
	if !ok {
		t.Fatalf("peer %s not on the device", k)
	}
	p.ReceiveBytes = 148 // a handshake initiation
	w.dev.SetPeer(p)
}

// The newer record of a pair starts the handshake: its new peer gets a
// keepalive, which makes WireGuard start one at once. The older end has the
// peer with its endpoint — its own traffic starts a handshake at once — but
// holds its keepalive back; on a device that does not report refused
// initiations (the fake here) it starts too if nothing came from the peer by
// contactRetry: the newer end may have taken this host first, its initiation
// dropped. That holds however the older end found the record: in a snapshot,
// or as a watch event (a joiner's device may take this host before this
// device takes the joiner). A handshake ends each contact, and the peers get
// their usual configuration back.
func TestFirstContactRoles(t *testing.T) {
	w := newWorld(t)
	w.ctl.self.Keepalive = 25 * time.Second // held back while the other end starts
	older, olderKey := hostEntry(t, 2, 2)   // joined before us
	newer, newerKey := hostEntry(t, 3, 10)  // joined after us, found in our snapshot
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older, newer}})
	o := w.ctl.Pass(false)
	if len(o.Contacts) != 2 {
		t.Fatalf("contacts %v, want both peers", o.Contacts)
	}
	if ct := w.ctl.contacts[olderKey]; ct == nil || !ct.starts || !ct.restarts {
		t.Errorf("the older record: contact %+v; want this end to start, and restart crossed handshakes", ct)
	}
	if ct := w.ctl.contacts[newerKey]; ct == nil || ct.starts || !ct.startAt.Equal(ct.since.Add(contactRetry)) {
		t.Errorf("the newer record from a snapshot: contact %+v; want this end to start only after %s", ct, contactRetry)
	}
	if p, _ := devicePeer(t, w, olderKey); p.PersistentKeepaliveInterval != 25*time.Second || p.Endpoint == nil {
		t.Errorf("the older record's peer: keepalive %s, endpoint %v; want the configured 25s and the endpoint", p.PersistentKeepaliveInterval, p.Endpoint)
	}
	if p, _ := devicePeer(t, w, newerKey); p.PersistentKeepaliveInterval != 0 || p.Endpoint == nil {
		t.Errorf("the newer record's peer: keepalive %s, endpoint %v; want none and the endpoint", p.PersistentKeepaliveInterval, p.Endpoint)
	}

	joined, joinedKey := hostEntry(t, 4, 11) // joins the running mesh
	w.ctl.Load(peer.Batch{Entries: []peer.Write{joined}})
	w.ctl.Pass(false)
	if ct := w.ctl.contacts[joinedKey]; ct == nil || ct.starts || !ct.startAt.Equal(ct.since.Add(contactRetry)) || !ct.counted {
		t.Errorf("a joiner's record from a watch event: contact %+v; want this end to start only after %s, as for a snapshot's", ct, contactRetry)
	}
	if p, _ := devicePeer(t, w, joinedKey); p.Endpoint == nil || p.PersistentKeepaliveInterval != 0 {
		t.Errorf("a joiner's peer: endpoint %v, keepalive %s; want the endpoint and none", p.Endpoint, p.PersistentKeepaliveInterval)
	}

	now := time.Now()
	for _, k := range []wgtypes.Key{olderKey, newerKey, joinedKey} {
		handshake(t, w, k, now)
	}
	if !w.ctl.checkContacts(now) {
		t.Fatal("checkContacts saw no change after the handshakes")
	}
	if o := w.ctl.Pass(false); len(o.Contacts) != 0 || o.Ended != (ContactEnds{Handshake: 3}) {
		t.Fatalf("contacts after the handshakes: %v, ended %+v; want none, 3 ended with a handshake", o.Contacts, o.Ended)
	}
	for _, k := range []wgtypes.Key{olderKey, newerKey, joinedKey} {
		if p, _ := devicePeer(t, w, k); p.PersistentKeepaliveInterval != 25*time.Second || p.Endpoint == nil {
			t.Errorf("peer %s after its handshake: keepalive %s, endpoint %v; want the configured 25s and the endpoint", k, p.PersistentKeepaliveInterval, p.Endpoint)
		}
	}
}

// A restart takes the peer off the device, and with it every packet queued
// for the pending handshake. So the newer end restarts only a handshake that
// crossed — the peer sent something, yet none completed — never one that is
// merely not there yet (the other end does not have this host yet and will
// start it), nor one under way (something came, and the handshake completes
// before the next look). The older end starts after contactRetry only when
// nothing came.
// Past contactBound the peers that saw no handshake are taken off and put
// back as usual, in one device call.
func TestFirstContactRestartsOnlyCrossedHandshakes(t *testing.T) {
	for _, crossed := range []bool{false, true} {
		w := newWorld(t)
		older, olderKey := hostEntry(t, 2, 2)
		newer, newerKey := hostEntry(t, 3, 10)
		w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older, newer}})
		w.ctl.Pass(false)
		if crossed {
			heardFrom(t, w, olderKey)
			heardFrom(t, w, newerKey)
		}
		start := w.ctl.contacts[olderKey].since
		calls := w.dev.Calls()
		resets := 0
		for at := start; at.Before(start.Add(contactBound)); at = at.Add(w.ctl.contactWait(at)) {
			w.ctl.checkContacts(at)
			if w.dev.Calls() > calls {
				resets += w.dev.Calls() - calls
				calls = w.dev.Calls()
			}
			if crossed {
				heardFrom(t, w, olderKey) // the reset peer crosses again
			}
		}
		if ct := w.ctl.contacts[newerKey]; ct.starts == crossed {
			t.Errorf("crossed %v: the older end started %v; want it to start only when nothing came", crossed, ct.starts)
		}
		switch {
		case !crossed && resets != 0:
			t.Errorf("%d restarts of handshakes nothing answered yet, want none", resets)
		case crossed && (resets < 1 || resets > 5):
			// A restart takes a look and a confirm: at 350 ms, then
			// after a wait of 250..750 ms and 100 ms, then of 500..1500 ms
			// and 100 ms: at most five within contactBound.
			t.Errorf("crossed: %d handshake restarts in %s, want a few (from %s, doubling to %s)", resets, contactBound, contactRetry, contactRetryMax)
		}
		calls = w.dev.Calls()
		w.ctl.checkContacts(start.Add(contactBound))
		if w.dev.Calls() != calls+1 {
			t.Errorf("giving up made %d device calls, want 1 (both peers put back quiet, their queued keepalives dropped)", w.dev.Calls()-calls)
		}
		if o := w.ctl.Pass(false); o.Ended != (ContactEnds{Bound: 2}) || o.Restarts != resets {
			t.Errorf("crossed %v: the pass after the bound reports ended %+v, %d restarts; want 2 at the bound, %d restarts", crossed, o.Ended, o.Restarts, resets)
		}
		if len(w.ctl.contacts) != 0 || w.ctl.initiating != 0 {
			t.Errorf("after contactBound: contacts %v, initiating %d; want none", w.ctl.contacts, w.ctl.initiating)
		}
		for _, k := range []wgtypes.Key{olderKey, newerKey} {
			if p, _ := devicePeer(t, w, k); p.PersistentKeepaliveInterval != 0 || p.Endpoint == nil {
				t.Errorf("after the bound peer %s: keepalive %s, endpoint %v", k, p.PersistentKeepaliveInterval, p.Endpoint)
			}
		}
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
	if !pending || !ct.starts || !ct.restarts {
		t.Fatalf("contact with the victim taken back: %+v (pending %v), want this end to start and restart", ct, pending)
	}
	if p, _ := devicePeer(t, w, victimKey); p.Endpoint == nil || len(o.Contacts) != 1 {
		t.Errorf("victim taken back without its endpoint (%v) or contact (%v)", p.Endpoint, o.Contacts)
	}
}

// Something came from the peer, and its handshake completes before the next
// look, crossingConfirm later: that was a handshake under way, not a
// crossing — no restart.
func TestFirstContactDoesNotRestartAHandshakeUnderWay(t *testing.T) {
	w := newWorld(t)
	older, olderKey := hostEntry(t, 2, 2)
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older}})
	w.ctl.Pass(false)
	ct := w.ctl.contacts[olderKey]
	heardFrom(t, w, olderKey)
	calls := w.dev.Calls()
	first := ct.next
	w.ctl.checkContacts(first)
	if got := w.ctl.contactWait(first); got != crossingConfirm {
		t.Errorf("after a look that heard the peer: next look in %s, want %s", got, crossingConfirm)
	}
	handshake(t, w, olderKey, ct.next.Add(time.Millisecond))
	if !w.ctl.checkContacts(ct.next) {
		t.Error("the handshake did not end the contact")
	}
	if got := w.dev.Calls() - calls; got != 0 {
		t.Errorf("%d device calls while the handshake was under way, want none", got)
	}
}

// Pending first contacts are checked when one is due, not on a fast tick: a
// quiet end waits for its grace, an end that only started waits for the
// bound; a restarting end's look for a crossing brings the check forward,
// and a timer armed for later is re-armed sooner. No check comes sooner
// than contactPollMin after another.
func TestFirstContactChecksWhenDue(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	_, quietKey := hostEntry(t, 4, 1)
	w.ctl.contacts[quietKey] = &contact{since: now, quiet: true} // a rotating host's
	if got := w.ctl.contactWait(now); got != quietGrace {
		t.Errorf("a lone quiet end: next check in %s, want its grace %s", got, quietGrace)
	}
	armed := w.ctl.armContacts(contactTimer{}, now)
	if !armed.at.Equal(now.Add(quietGrace)) {
		t.Errorf("timer armed for %s, want %s", armed.at.Sub(now), quietGrace)
	}
	_, startKey := hostEntry(t, 3, 10)
	w.ctl.contacts[startKey] = &contact{starts: true, since: now}
	if got := w.ctl.contactWait(now); got != contactBound {
		t.Errorf("an end that only started: next check in %s, want the bound %s", got, contactBound)
	}

	older, olderKey := hostEntry(t, 2, 2)
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older}})
	w.ctl.Pass(false)
	if ct := w.ctl.contacts[olderKey]; ct == nil || !ct.restarts {
		t.Fatalf("want the older record's host as a pending contact this end restarts, got %+v", ct)
	}
	rearmed := w.ctl.armContacts(armed, now)
	if rearmed.c == armed.c || rearmed.at.Sub(now) > contactRetry+time.Second {
		t.Errorf("a restarting end's look did not bring the check forward: armed for %s", rearmed.at.Sub(now))
	}
	if again := w.ctl.armContacts(rearmed, now); again.c != rearmed.c {
		t.Error("a timer due soon enough was replaced")
	}
	if got := w.ctl.contactWait(now.Add(time.Hour)); got != contactPollMin {
		t.Errorf("overdue contacts: next check in %s, want the floor %s", got, contactPollMin)
	}
	clear(w.ctl.contacts)
	if off := w.ctl.armContacts(rearmed, now); off.c != nil {
		t.Error("no contact pending, but the timer stays armed")
	}
}

// A peer that joins a running mesh cannot have a session with this device
// yet, so taking it reads nothing: a join wave costs no device read per join.
// The joiners start the handshakes; the pending contacts are looked at
// together when they are due, in one read of the device, and this end starts
// only those it heard nothing from (the joiner took this host first, and its
// initiation was dropped).
func TestAJoinWaveCostsOneDeviceRead(t *testing.T) {
	w := newWorld(t)
	older, _ := hostEntry(t, 2, 2)
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older}})
	w.ctl.Pass(false)
	reads := w.dev.Reads()
	var joiners []wgtypes.Key
	for i := range 20 {
		joined, k := hostEntry(t, 10+i, uint64(10+i))
		w.ctl.Load(peer.Batch{Entries: []peer.Write{joined}})
		w.ctl.Pass(false)
		if ct, pending := w.ctl.contacts[k]; !pending || ct.starts || ct.startAt.IsZero() {
			t.Fatalf("join %d: first contact %+v (pending %v); want this end waiting, then starting", i, ct, pending)
		}
		joiners = append(joiners, k)
	}
	if got := w.dev.Reads() - reads; got != 0 {
		t.Errorf("20 joins read the device %d times, want 0", got)
	}
	for i, k := range joiners {
		if p, ok := devicePeer(t, w, k); !ok || p.Endpoint == nil || p.PersistentKeepaliveInterval != 0 {
			t.Errorf("join %d: peer endpoint %v, keepalive %s; want the endpoint and none", i, p.Endpoint, p.PersistentKeepaliveInterval)
		}
	}
	// Half the joiners' initiations came; the others' were dropped.
	for _, k := range joiners[:10] {
		heardFrom(t, w, k)
	}
	reads = w.dev.Reads()
	w.ctl.checkContacts(time.Now().Add(contactRetry))
	if got := w.dev.Reads() - reads; got != 1 {
		t.Errorf("the due contacts read the device %d times, want 1", got)
	}
	w.ctl.Pass(false)
	for i, k := range joiners {
		ct := w.ctl.contacts[k]
		if heard := i < 10; ct == nil || ct.starts == heard {
			t.Errorf("join %d (heard %v): contact %+v; want this end to start only when it heard nothing", i, heard, ct)
		}
		if p, _ := devicePeer(t, w, k); (p.PersistentKeepaliveInterval != 0) != (i >= 10) {
			t.Errorf("join %d: keepalive %s after the look", i, p.PersistentKeepaliveInterval)
		}
	}
}

// manyHosts is n hosts' records (198.18.0.100 on), older than a self entry
// of revision 1000, and their keys.
func manyHosts(t *testing.T, n int) ([]peer.Write, []wgtypes.Key) {
	t.Helper()
	var entries []peer.Write
	var keys []wgtypes.Key
	for i := range n {
		e, k := hostEntry(t, 100+i, uint64(10+i))
		entries = append(entries, e)
		keys = append(keys, k)
	}
	return entries, keys
}

// A host that starts with more peers than maxInitiating starts that many
// first handshakes at once. The rest, new to it, are ordinary peers
// (endpoint, usual keepalive) left to traffic: they hold no session with
// this host, so what they send starts a handshake. Peers owed a handshake —
// every peer, once the device is made again: they hold sessions with the
// device that is gone — wait instead, configured as usual, and start in turn
// as started contacts end, by a handshake or by the bound. A waiting peer
// that meanwhile had a handshake (it started one itself) is passed over.
func TestFirstContactsAreBoundedAndOwedOnesWait(t *testing.T) {
	w := newWorld(t)
	entries, keys := manyHosts(t, maxInitiating+44)
	w.snapshot(append(entries, w.selfEntry(1000))...)
	if w.ctl.initiating != maxInitiating || len(w.ctl.contacts) != maxInitiating || len(w.ctl.waiting) != 0 {
		t.Fatalf("initiating %d, contacts %d, waiting %d; want %d, %d and none", w.ctl.initiating, len(w.ctl.contacts), len(w.ctl.waiting), maxInitiating, maxInitiating)
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
	w.ctl.checkContacts(time.Now().Add(contactBound))
	if w.ctl.initiating != 0 || len(w.ctl.contacts) != 0 {
		t.Fatalf("after the bound: initiating %d, contacts %d; want 0", w.ctl.initiating, len(w.ctl.contacts))
	}

	w.ctl.ReplaceDevice(w.dev)
	if o := w.ctl.Pass(false); o.Err() != nil {
		t.Fatal(o.Err())
	}
	if w.ctl.initiating != maxInitiating || len(w.ctl.waiting) != 44 {
		t.Fatalf("a device made again: initiating %d, waiting %d; want %d and 44", w.ctl.initiating, len(w.ctl.waiting), maxInitiating)
	}

	// Ten handshakes end ten contacts: ten waiting peers start, but not
	// the first waiting one, which had a handshake of its own meanwhile.
	var waiting []wgtypes.Key
	for _, wc := range w.ctl.waiting {
		waiting = append(waiting, wc.key)
	}
	now := time.Now()
	started := 0
	for _, k := range keys {
		if _, ok := w.ctl.contacts[k]; ok && started < 10 {
			handshake(t, w, k, now)
			started++
		}
	}
	handshake(t, w, waiting[0], now)
	if !w.ctl.checkContacts(now) {
		t.Fatal("checkContacts reports no change after ten handshakes")
	}
	if w.ctl.initiating != maxInitiating || len(w.ctl.waiting) != 44-11 {
		t.Fatalf("after ten handshakes: initiating %d, waiting %d; want %d and %d", w.ctl.initiating, len(w.ctl.waiting), maxInitiating, 44-11)
	}
	if _, ok := w.ctl.contacts[waiting[0]]; ok {
		t.Error("a waiting peer that had its own handshake was started")
	}
	for _, k := range waiting[1:11] {
		if ct, ok := w.ctl.contacts[k]; !ok || !ct.starts {
			t.Errorf("waiting peer %s: contact %+v, want this end to start it", k, ct)
		}
	}
	if o := w.ctl.Pass(false); o.Err() != nil {
		t.Fatal(o.Err())
	}
	if p, _ := devicePeer(t, w, waiting[1]); p.PersistentKeepaliveInterval != contactKeepalive {
		t.Errorf("a started waiting peer has keepalive %s on the device, want the contact's %s", p.PersistentKeepaliveInterval, contactKeepalive)
	}

	// The bound ends the rest; the last waiting ones take their place.
	w.ctl.checkContacts(now.Add(contactBound))
	if w.ctl.initiating != 44-11 || len(w.ctl.waiting) != 0 {
		t.Errorf("after the bound: initiating %d, waiting %d; want %d and 0", w.ctl.initiating, len(w.ctl.waiting), 44-11)
	}
	w.ctl.checkContacts(now.Add(2 * contactBound))
	if w.ctl.initiating != 0 || len(w.ctl.contacts) != 0 || w.ctl.waiting != nil {
		t.Errorf("after two bounds: initiating %d, contacts %d, waiting %d; want none", w.ctl.initiating, len(w.ctl.contacts), len(w.ctl.waiting))
	}
}

// A restart with more restored peers than maxInitiating, before the bucket
// can be read (NATS down): the waiting peers' handshakes start as the first
// ones end, written to the device at once, since no pass comes to write
// them.
func TestRestoredPeersPastTheBoundStartBeforeTheFirstPass(t *testing.T) {
	w := newWorld(t)
	entries, _ := manyHosts(t, maxInitiating+5)
	o := w.ctl.Restore(accepted(t, entries...))
	if o.DeviceErr != nil || len(o.Contacts) != maxInitiating || len(w.ctl.waiting) != 5 {
		t.Fatalf("restore: err %v, contacts %d, waiting %d; want %d and 5", o.DeviceErr, len(o.Contacts), len(w.ctl.waiting), maxInitiating)
	}
	waiting := w.ctl.waiting[0].key
	if p, _ := devicePeer(t, w, waiting); p.PersistentKeepaliveInterval != 0 {
		t.Fatalf("a waiting peer has keepalive %s before its turn", p.PersistentKeepaliveInterval)
	}
	now := time.Now()
	for k := range w.ctl.contacts {
		handshake(t, w, k, now)
	}
	w.ctl.checkContacts(now)
	if ct, ok := w.ctl.contacts[waiting]; !ok || !ct.starts {
		t.Fatalf("the first waiting peer: contact %+v, want this end to start it", ct)
	}
	if p, _ := devicePeer(t, w, waiting); p.PersistentKeepaliveInterval != contactKeepalive {
		t.Errorf("the started waiting peer has keepalive %s on the device before the first pass, want %s", p.PersistentKeepaliveInterval, contactKeepalive)
	}
}

// reportingDevice is the fake device saying which handshake messages it
// refused, as the embedded wireguard-go does.
type reportingDevice struct {
	*fake.Device
	refused chan wgdev.Refusal
}

func (d reportingDevice) RefusedHandshakes() <-chan wgdev.Refusal { return d.refused }

// hostEntryAt is hostEntry with the host's own endpoint, 198.18.0.<n>:51820,
// written at the time written (its seq).
func hostEntryAt(t *testing.T, n int, rev uint64, written time.Time) (peer.Write, wgtypes.Key, netip.AddrPort) {
	t.Helper()
	priv := wgtest.PrivateKey(t)
	p := netip.MustParsePrefix(fmt.Sprintf("fd10:%x::/48", n))
	r := peer.Record{Name: p.String(), PublicKey: priv.PublicKey().String(), AdvertiseAddress: fmt.Sprintf("198.18.0.%d", n), AllowedIP: p.String(), WGPort: 51820, Seq: uint64(written.UnixMicro())}
	if err := rules.SignRecord(&r, priv); err != nil {
		t.Fatal(err)
	}
	return peer.Write{Key: peer.Key(p), Value: r.Encode(), Revision: rev}, priv.PublicKey(), netip.MustParseAddrPort(fmt.Sprintf("198.18.0.%d:51820", n))
}

// On a device that reports refused initiations the older end knows when it
// took the peer second: the peer's initiation was refused, lately or from
// now on. It starts then, and only then — never on a guess that could cross
// the newer end's initiation — except for records written before the device
// opened: their hosts may have sent before the device existed, unrefused,
// and those get the guess too.
func TestFirstContactStartsOnARefusal(t *testing.T) {
	w := newWorld(t)
	dev := reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, dev, Options{KeepView: true})
	opened := w.ctl.opened
	older, olderKey, olderAt := hostEntryAt(t, 2, 2, opened.Add(-time.Minute))
	early, earlyKey, earlyAt := hostEntryAt(t, 3, 10, opened.Add(time.Second)) // took this host first
	before, beforeKey, _ := hostEntryAt(t, 5, 12, opened.Add(-time.Second))    // may have sent before the device was there
	late, lateKey, lateAt := hostEntryAt(t, 4, 20, opened.Add(2*time.Second))  // joins later
	silent, silentKey, _ := hostEntryAt(t, 6, 21, opened.Add(2*time.Second))   // joins later, never refused
	now := time.Now()
	dev.refused <- wgdev.Refusal{From: earlyAt, At: now}
	w.ctl.drainRefusals() // as the loop does before each pass
	if w.ctl.startRefused(now) {
		t.Error("a refusal from a peer not taken yet started a contact")
	}
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older, early, before}})
	w.ctl.Pass(false)
	if ct := w.ctl.contacts[earlyKey]; ct == nil || !ct.starts || ct.restarts {
		t.Errorf("a newer peer refused before it was taken: contact %+v; want this end to start, and not restart", ct)
	}
	if ct := w.ctl.contacts[beforeKey]; ct == nil || ct.starts || !ct.startAt.Equal(ct.since.Add(contactRetry)) {
		t.Errorf("a newer peer written before the device opened, not refused: contact %+v; want the guess after %s", ct, contactRetry)
	}
	if p, _ := devicePeer(t, w, earlyKey); p.PersistentKeepaliveInterval == 0 || p.Endpoint == nil {
		t.Errorf("the refused peer: keepalive %s, endpoint %v; want both: this end starts", p.PersistentKeepaliveInterval, p.Endpoint)
	}
	if p, _ := devicePeer(t, w, beforeKey); p.PersistentKeepaliveInterval != 0 || p.Endpoint == nil {
		t.Errorf("the peer this end guesses for: keepalive %s, endpoint %v; want the endpoint only (traffic goes on a device that drops it without one)", p.PersistentKeepaliveInterval, p.Endpoint)
	}
	w.ctl.Load(peer.Batch{Entries: []peer.Write{late, silent}})
	w.ctl.Pass(false)
	for _, k := range []wgtypes.Key{lateKey, silentKey} {
		if ct := w.ctl.contacts[k]; ct == nil || ct.starts || !ct.startAt.IsZero() {
			t.Errorf("a joiner not refused: contact %+v; want this end to wait for a refusal, with no timer", ct)
		}
		// Nothing this end sends may start a handshake that crosses the
		// joiner's: crossed initiations can leave a session that carries
		// one direction only, which no look at the device sees.
		if p, _ := devicePeer(t, w, k); p.Endpoint != nil || p.PersistentKeepaliveInterval != 0 {
			t.Errorf("a joiner waiting for a refusal: endpoint %v, keepalive %s; want neither", p.Endpoint, p.PersistentKeepaliveInterval)
		}
	}
	w.ctl.checkContacts(now.Add(contactRetry))
	if ct := w.ctl.contacts[lateKey]; ct.starts {
		t.Error("a joiner not refused started after contactRetry of silence")
	}
	w.ctl.noteRefused(wgdev.Refusal{From: olderAt, At: now})
	if w.ctl.startRefused(now) {
		t.Error("a refusal from a peer this end starts anyway changed something")
	}
	// The waiting joiner's traffic may have spent WireGuard's initiation
	// on the missing endpoint: it starts as a new peer, in one device call.
	w.ctl.noteRefused(wgdev.Refusal{From: lateAt, At: now.Add(contactRetry)})
	calls := w.dev.Calls()
	if !w.ctl.startRefused(now.Add(contactRetry)) {
		t.Fatal("a refusal from the waiting joiner did not start it")
	}
	if got := w.dev.Calls() - calls; got != 1 {
		t.Errorf("starting the waiting joiner made %d device calls, want 1 (off and back on)", got)
	}
	if p, _ := devicePeer(t, w, lateKey); p.PersistentKeepaliveInterval == 0 || p.Endpoint == nil {
		t.Errorf("the joiner refused later: keepalive %s, endpoint %v; want both: this end starts", p.PersistentKeepaliveInterval, p.Endpoint)
	}
	w.ctl.Pass(false)
	// Refused while the pass took it (the report came after the loop's
	// look before the pass): started in the same pass, as a new peer.
	racing, racingKey, racingAt := hostEntryAt(t, 7, 22, opened.Add(3*time.Second))
	dev.refused <- wgdev.Refusal{From: racingAt, At: time.Now()}
	w.ctl.Load(peer.Batch{Entries: []peer.Write{racing}})
	calls = w.dev.Calls()
	w.ctl.Pass(false)
	if ct := w.ctl.contacts[racingKey]; ct == nil || !ct.starts {
		t.Errorf("a joiner refused while the pass took it: contact %+v; want this end to start", ct)
	}
	if p, _ := devicePeer(t, w, racingKey); w.dev.Calls()-calls != 2 || p.Endpoint == nil || p.PersistentKeepaliveInterval == 0 {
		t.Errorf("a joiner refused while the pass took it: %d device calls, endpoint %v, keepalive %s; want 2 (taken, started), both", w.dev.Calls()-calls, p.Endpoint, p.PersistentKeepaliveInterval)
	}
	if ct := w.ctl.contacts[silentKey]; ct.starts {
		t.Error("the joiner never refused started")
	}
	if _, pending := w.ctl.contacts[olderKey]; !pending {
		t.Error("the older peer's contact ended")
	}
	w.ctl.noteRefused(wgdev.Refusal{From: netip.MustParseAddrPort("198.18.0.9:51820"), At: now.Add(refusedWithin)})
	if _, kept := w.ctl.refused[earlyAt]; kept || w.ctl.refusedLately(earlyAt, now.Add(refusedWithin)) {
		t.Errorf("refusals older than %s are remembered: %v", refusedWithin, w.ctl.refused)
	}
}

// The guess follows the record's own time, not the pass it comes in: a
// record written after the device opened waits for a refusal even when it
// is found in a snapshot; a new device (made again) makes every record older.
func TestFirstContactGuessesOnlyForRecordsOlderThanTheDevice(t *testing.T) {
	w := newWorld(t)
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}, Options{KeepView: true})
	opened := w.ctl.opened
	before, beforeKey, _ := hostEntryAt(t, 3, 10, opened.Add(-time.Second))
	after, afterKey, _ := hostEntryAt(t, 4, 12, opened.Add(time.Second))
	w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), before, after}})
	w.ctl.Pass(false)
	for k, guess := range map[wgtypes.Key]bool{beforeKey: true, afterKey: false} {
		if ct := w.ctl.contacts[k]; ct == nil || ct.startAt.IsZero() == guess {
			t.Errorf("contact %+v; want the guess %v", ct, guess)
		}
	}
}

// A newer record's seq is taken just before its write, which may land much
// later: it can predate this host's device although the record came after
// this host's own, written after the device opened (the agent opens it
// before claiming). Its host read this host's record before it could send,
// so its initiation met the device: no guess.
func TestFirstContactNoGuessWhenOwnRecordCameAfterTheDevice(t *testing.T) {
	w := newWorld(t)
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}, Options{KeepView: true})
	opened := w.ctl.opened
	own := peer.Record{Name: "self", PublicKey: w.key.String(), AdvertiseAddress: "198.18.0.20", AllowedIP: selfPrefix.String(), WGPort: 51820,
		Seq: uint64(opened.Add(100 * time.Millisecond).UnixMicro())}
	if err := rules.SignRecord(&own, w.priv); err != nil {
		t.Fatal(err)
	}
	slow, slowKey, _ := hostEntryAt(t, 3, 10, opened.Add(-time.Second)) // seq before the device, revision after ours
	w.snapshot(peer.Write{Key: peer.Key(selfPrefix), Value: own.Encode(), Revision: 5}, slow)
	if ct := w.ctl.contacts[slowKey]; ct == nil || ct.starts || !ct.startAt.IsZero() {
		t.Errorf("a newer record written (by its seq) before the device, after our own: contact %+v; want this end waiting for a refusal, no guess", ct)
	}
}

// On a device that reports refusals the newer end restarts a handshake only
// once it knows the initiations crossed: its device refused the peer's
// answer to its initiation. Something from the peer and no handshake is no
// crossing there: the older end started after a refusal, and its handshake
// is under way, slow on a loaded host — a restart would put this end's
// initiation right behind its answer, which a wireguard-go peer may take at
// once and keep a session that carries one direction only. A refused answer
// from before this end's last start is about an initiation already
// replaced; one followed by a handshake is no crossing either.
func TestFirstContactRestartsOnARefusedAnswer(t *testing.T) {
	for _, tc := range []struct {
		name        string
		answerAfter time.Duration // refused answer, after this end started; <0: before
		handshake   bool          // a handshake comes before the look
		restarts    int
	}{
		{"heard, no refused answer", -1, false, 0},
		{"refused answer from before the start", -time.Millisecond, false, 0},
		{"refused answer", 500 * time.Millisecond, false, 1},
		{"refused answer, then a handshake", 500 * time.Millisecond, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			dev := reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}
			w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, dev, Options{KeepView: true})
			older, olderKey, olderAt := hostEntryAt(t, 2, 2, w.ctl.opened.Add(-time.Minute))
			w.ctl.Load(peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), older}})
			w.ctl.Pass(false)
			ct := w.ctl.contacts[olderKey]
			if ct == nil || !ct.starts || !ct.restarts {
				t.Fatalf("contact %+v; want this end to start, and restart crossed handshakes", ct)
			}
			heardFrom(t, w, olderKey) // the older end's initiation, answered
			start := ct.since
			switch {
			case tc.answerAfter == -1:
			case tc.answerAfter < 0:
				w.ctl.noteRefused(wgdev.Refusal{From: olderAt, At: ct.started.Add(tc.answerAfter), Answer: true})
			default:
				w.ctl.noteRefused(wgdev.Refusal{From: olderAt, At: start.Add(tc.answerAfter), Answer: true})
				if got := w.ctl.contactWait(start.Add(tc.answerAfter)); got != crossingConfirm {
					t.Errorf("after a refused answer: next look in %s, want %s", got, crossingConfirm)
				}
			}
			if w.ctl.refusedLately(olderAt, start) {
				t.Error("a refused answer counts as a refused initiation")
			}
			if tc.handshake {
				handshake(t, w, olderKey, start.Add(tc.answerAfter+time.Millisecond))
			}
			calls := w.dev.Calls()
			for at := start; at.Before(start.Add(contactBound)) && w.ctl.contacts[olderKey] != nil; at = at.Add(w.ctl.contactWait(at)) {
				w.ctl.checkContacts(at)
			}
			if got := w.dev.Calls() - calls; got != tc.restarts {
				t.Errorf("%d restarts, want %d", got, tc.restarts)
			}
			if tc.restarts > 0 {
				if p, _ := devicePeer(t, w, olderKey); p.Endpoint == nil || p.PersistentKeepaliveInterval == 0 {
					t.Errorf("the restarted peer: endpoint %v, keepalive %s; want both", p.Endpoint, p.PersistentKeepaliveInterval)
				}
			}
		})
	}
}

// A peer taken waiting (no endpoint, no keepalive) gets its endpoint back at
// contactBound, also while NATS is down: a contact under way finishes
// (docs/contract.md §6), or nothing this host sends to the peer could start
// a handshake for the whole outage.
func TestWaitingPeerGetsItsEndpointWhileNATSIsDown(t *testing.T) {
	for _, natsDown := range []bool{false, true} {
		t.Run(map[bool]string{false: "nats up", true: "nats down"}[natsDown], func(t *testing.T) {
			t.Parallel()
			waitingPeerGetsItsEndpoint(t, natsDown)
		})
	}
}

func waitingPeerGetsItsEndpoint(t *testing.T, natsDown bool) {
	w := newWorld(t)
	dev := reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, dev, Options{KeepView: true})
	opened := w.ctl.opened
	joiner, joinerKey, _ := hostEntryAt(t, 4, 20, opened.Add(time.Second)) // newer record: this end waits

	var up atomic.Bool
	up.Store(true)
	batches := make(chan peer.Batch, 1)
	passes := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.ctl.Run(ctx, Inputs{Batches: batches, Resync: time.Hour, Connected: up.Load,
			Publish: func(Outcome) { passes <- struct{}{} }})
	}()
	t.Cleanup(func() { cancel(); <-done })

	batches <- peer.Batch{Snapshot: true, Entries: []peer.Write{w.selfEntry(5), joiner}}
	<-passes
	up.Store(!natsDown) // NATS goes away right after the pass
	time.Sleep(contactBound + time.Second)
	cancel()
	<-done
	p, ok := devicePeer(t, w, joinerKey)
	if !ok {
		t.Fatal("joiner not on the device")
	}
	if p.Endpoint == nil {
		t.Errorf("%s after the pass (contactBound %s), NATS down: the waiting peer still has no endpoint; pending contacts %d",
			contactBound+time.Second, contactBound, len(w.ctl.contacts))
	}
}

// An ikto 0.3.0 host (an unsigned record) never starts a first handshake of
// its own: it runs no first contact and, by default, no keepalive. Its
// record newer or not, this end starts; waiting for a refusal that never
// comes would hold its first packet for WireGuard's retry (5 s).
func TestAPeerOn030IsStartedByThisEnd(t *testing.T) {
	w := newWorld(t)
	w.ctl = New(Self{Key: w.key, Prefix: selfPrefix, Rules: rules}, reportingDevice{w.dev, make(chan wgdev.Refusal, 1)}, Options{KeepView: true})
	priv := wgtest.PrivateKey(t)
	p := netip.MustParsePrefix("fd10:7::/48")
	r := peer.Record{Name: "old", PublicKey: priv.PublicKey().String(), AdvertiseAddress: "198.18.0.7", AllowedIP: p.String(), WGPort: 51820}
	// This host's own record, claimed after its device opened (the agent
	// opens it first), as in the running agent.
	own := peer.Record{Name: "self", PublicKey: w.key.String(), AdvertiseAddress: "198.18.0.20", AllowedIP: selfPrefix.String(), WGPort: 51820,
		Seq: uint64(w.ctl.opened.Add(100 * time.Millisecond).UnixMicro())}
	if err := rules.SignRecord(&own, w.priv); err != nil {
		t.Fatal(err)
	}
	w.snapshot(peer.Write{Key: peer.Key(selfPrefix), Value: own.Encode(), Revision: 5}, peer.Write{Key: peer.Key(p), Value: r.Encode(), Revision: 20})
	ct := w.ctl.contacts[priv.PublicKey()]
	if dp, _ := devicePeer(t, w, priv.PublicKey()); ct == nil || !ct.starts || dp.Endpoint == nil {
		t.Errorf("a newer 0.3.0 record: contact %+v, endpoint %v; want this end started, the endpoint on the device", ct, dp.Endpoint)
	}
}

// Anyone who can send UDP to the port makes the device refuse initiations,
// from source addresses it picks (ports of one address are enough). A
// flood that fills the notes must not keep a peer's refusal from being
// noted: the oldest note goes instead.
func TestJunkRefusalsDoNotCrowdOutAPeer(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	for i := range maxRefusals {
		w.ctl.noteRefused(wgdev.Refusal{From: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(1024+i)), At: now})
	}
	genuine := netip.MustParseAddrPort("198.18.0.4:51820")
	w.ctl.noteRefused(wgdev.Refusal{From: genuine, At: now.Add(time.Millisecond)})
	if !w.ctl.refusedLately(genuine, now.Add(2*time.Millisecond)) {
		t.Errorf("the peer's refusal, after %d junk ones from one address: not noted", maxRefusals)
	}
}

// A waiting peer started before the first pass is on the device as the
// snapshot had it; the bucket has the last word all the same: one revoked
// meanwhile goes with the first pass.
func TestAWaitingRestoredPeerRevokedMeanwhileGoes(t *testing.T) {
	w := newWorld(t)
	entries, _ := manyHosts(t, maxInitiating+5)
	w.ctl.Restore(accepted(t, entries...))
	gone := w.ctl.waiting[0].key
	now := time.Now()
	for k := range w.ctl.contacts {
		handshake(t, w, k, now)
	}
	w.ctl.checkContacts(now)
	if _, ok := w.ctl.contacts[gone]; !ok {
		t.Fatal("the first waiting peer did not start")
	}
	revoked := peer.Write{Key: peer.RevokedKey(gone), Value: []byte("{}"), Revision: 9999}
	if o := w.snapshot(append(entries, w.selfEntry(1), revoked)...); o.Err() != nil {
		t.Fatal(o.Err())
	}
	if _, ok := devicePeer(t, w, gone); ok {
		t.Error("a peer revoked in the bucket stayed on the device after the first pass")
	}
}

// A host that stands down ends every first contact, started or waiting:
// none of them puts its peer back on the emptied device.
func TestStandingDownEndsEveryContact(t *testing.T) {
	w := newWorld(t)
	entries, _ := manyHosts(t, maxInitiating+44)
	w.snapshot(append(entries, w.selfEntry(1000))...)
	w.ctl.ReplaceDevice(w.dev) // every peer owed a handshake
	if len(w.ctl.waiting) != 44 {
		t.Fatalf("%d waiting, want 44", len(w.ctl.waiting))
	}
	o := w.update(peer.Write{Key: peer.Key(selfPrefix), Revision: 2000, Deleted: true})
	if o.State != StateStandingDown {
		t.Fatalf("state %s after the eviction, want standing down", o.State)
	}
	if w.ctl.initiating != 0 || len(w.ctl.contacts) != 0 || len(w.ctl.waiting) != 0 {
		t.Fatalf("after standing down: initiating %d, contacts %d, waiting %d; want none", w.ctl.initiating, len(w.ctl.contacts), len(w.ctl.waiting))
	}
	now := time.Now()
	for _, at := range []time.Time{now.Add(contactBound), now.Add(2 * contactBound)} {
		w.ctl.checkContacts(at)
		if got := devicePrefixes(t, w.dev); len(got) != 0 {
			t.Fatalf("the device of a host standing down holds %d peers again", len(got))
		}
	}
}

// A peer owed a handshake while it waits keeps its one turn: a device made
// again (every peer owed again) does not queue it twice.
func TestAWaitingPeerIsQueuedOnce(t *testing.T) {
	w := newWorld(t)
	entries, _ := manyHosts(t, maxInitiating+44)
	w.snapshot(append(entries, w.selfEntry(1000))...)
	for range 3 {
		w.ctl.ReplaceDevice(w.dev)
	}
	if len(w.ctl.waiting) != 44 || len(w.ctl.waitingFor) != 44 {
		t.Errorf("after three new devices: %d waiting (%d keys); want 44", len(w.ctl.waiting), len(w.ctl.waitingFor))
	}
}

// While NATS cannot be asked no peer is added: a device made again before
// the first pass gets none of the waiting restored peers when their turn
// comes.
func TestWaitingRestoredPeersAreNotAddedToADeviceMadeAgain(t *testing.T) {
	w := newWorld(t)
	entries, _ := manyHosts(t, maxInitiating+5)
	w.ctl.Restore(accepted(t, entries...))
	again := fake.New(wgdev.Config{Name: "wgagain"})
	w.ctl.ReplaceDevice(again)
	w.ctl.checkContacts(time.Now().Add(contactBound))
	if got := devicePrefixes(t, again); len(got) != 0 {
		t.Errorf("a device made again before the first pass holds %d peers, want none", len(got))
	}
}
