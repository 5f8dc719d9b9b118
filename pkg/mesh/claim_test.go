package mesh

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestJudge(t *testing.T) {
	self, other := wgtest.PublicKey(t), wgtest.PublicKey(t)
	prefix := netip.MustParsePrefix("fd10:1::/48")
	ours := &peer.Accepted{PublicKey: self, Prefix: prefix, Record: peer.Record{Name: "us"}}
	theirs := &peer.Accepted{PublicKey: other, Prefix: prefix, Record: peer.Record{Name: "intruder"}}
	garbage := &peer.Rejection{Key: peer.Key(prefix), Reason: peer.ReasonMalformed, Detail: "value is not a JSON peer record"}
	for _, tc := range []struct {
		name string
		d    peer.Delta
		want Claim
		why  string
	}{
		{"our record", peer.Delta{Self: ours}, ClaimHeld, ""},
		{"revoked", peer.Delta{Self: ours, SelfRevoked: true}, ClaimEvicted, "its public key " + self.String() + " was revoked"},
		// A revocation is a command: it wins over whatever the record says.
		{"revoked and overwritten", peer.Delta{Self: theirs, SelfRevoked: true}, ClaimEvicted, "its public key " + self.String() + " was revoked"},
		{"removed by a command", peer.Delta{SelfEvicted: "deleted by a command signed by the host's own key"}, ClaimEvicted, "deleted by a command signed by the host's own key"},
		{"never written", peer.Delta{}, ClaimMissing, "there is no record at " + peer.Key(prefix) + " (a re-created or restored bucket, or a delete that is no command)"},
		{"garbage", peer.Delta{SelfRejected: garbage}, ClaimContested, "the record at fd10:1::/48 is no longer ours (value is not a JSON peer record)"},
		{"another key", peer.Delta{Self: theirs}, ClaimContested, `fd10:1::/48 is now held by "intruder" (public key ` + other.String() + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, why := Judge(tc.d, self, prefix)
			if c != tc.want || why != tc.why {
				t.Errorf("Judge = %v, %q; want %v, %q", c, why, tc.want, tc.why)
			}
		})
	}
}

// A bucket made again, empty but for one host that wrote back: this host's
// record is written back, and the other host's signed record stays on the
// device and is offered for writing back (any agent may: it is signed).
func TestLostRecordsAreHealedNotObeyed(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	b, _ := hostEntry(t, 3, 3)
	if o := w.snapshot(w.selfEntry(1), a, b); o.Claim != ClaimHeld || !o.Repair.Empty() {
		t.Fatalf("first pass: claim %s, repair %+v", o.Claim, o.Repair)
	}
	a1 := a
	a1.Revision = 1
	o := w.snapshot(a1)
	if o.Err() != nil || o.Claim != ClaimMissing || !o.Repair.Reclaim {
		t.Fatalf("after re-creation: claim %s, err %v, repair %+v", o.Claim, o.Err(), o.Repair)
	}
	if d := cmp.Diff([]peer.Lost{{Key: b.Key, Value: b.Value}}, o.Repair.WriteBack); d != "" {
		t.Fatalf("records to write back (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"fd10:2::/48", "fd10:3::/48"}, sorted(devicePrefixes(t, w.dev))); d != "" {
		t.Fatalf("device after re-creation (-want +got):\n%s", d)
	}
	// Our record and the other host's come back: nothing changes on the
	// device.
	b1 := b
	b1.Revision = 3
	if o := w.update(w.selfEntry(2), b1); o.Claim != ClaimHeld || len(o.Plan.Add) != 0 || len(o.Plan.Remove) != 0 {
		t.Fatalf("after the write-backs: claim %s, plan %+v", o.Claim, o.Plan)
	}
}

// A lost record keeps its prefix: another key's record there is not
// routed until the first key leaves it by a statement (here, revoked).
func TestLostRecordKeepsItsPrefix(t *testing.T) {
	w := newWorld(t)
	a, aKey := hostEntry(t, 2, 2)
	w.snapshot(w.selfEntry(1), a)
	w.snapshot(w.selfEntry(1))
	newcomer, newKey := hostEntry(t, 2, 4) // another key draws fd10:2::/48
	if o := w.update(newcomer); len(o.Plan.Remove) != 0 || len(o.Plan.Add) != 0 {
		t.Fatalf("after the newcomer: plan %+v, want none", o.Plan)
	}
	o := w.update(peer.Write{Key: peer.RevokedKey(aKey), Value: []byte("{}"), Revision: 5})
	if len(o.Plan.Remove) != 1 || o.Plan.Remove[0] != aKey || len(o.Plan.Add) != 1 || o.Plan.Add[0].PublicKey != newKey {
		t.Fatalf("after the revocation: plan %+v, want the newcomer in its place", o.Plan)
	}
}

// Another key at our prefix is fought with compare-and-set a bounded number
// of times; then the host stands down, stays alive, and rejoins when the
// record is its own again.
func TestContestIsBoundedAndResumes(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	w.snapshot(w.selfEntry(1), a)
	rev := uint64(10)
	for i := range maxDefends {
		intruder, _ := hostEntry(t, 1, rev)
		o := w.update(intruder)
		if o.Claim != ClaimContested || o.Repair.Defend != rev || o.Err() != nil || len(devicePrefixes(t, w.dev)) != 1 {
			t.Fatalf("defend %d: claim %s, repair %+v, err %v", i, o.Claim, o.Repair, o.Err())
		}
		// Our restore lands, and the intruder writes again.
		if o := w.update(w.selfEntry(rev + 1)); o.Claim != ClaimHeld {
			t.Fatalf("after restore %d: claim %s", i, o.Claim)
		}
		rev += 2
	}
	intruder, _ := hostEntry(t, 1, rev)
	o := w.update(intruder)
	if o.Claim != ClaimLost || o.State != StateStandingDown || o.Err() != nil || len(devicePrefixes(t, w.dev)) != 0 {
		t.Fatalf("after the defends ran out: claim %s, state %s, err %v, device %v", o.Claim, o.State, o.Err(), devicePrefixes(t, w.dev))
	}
	// An operator evicts the intruder: its record is deleted. The prefix is
	// free again, so this host claims it back and rejoins.
	if o := w.update(peer.Write{Key: peer.Key(selfPrefix), Revision: rev + 1, Deleted: true}); o.Claim != ClaimLost || !o.Repair.Reclaim || o.Err() != nil {
		t.Fatalf("after the intruder's eviction: claim %s, repair %+v, err %v", o.Claim, o.Repair, o.Err())
	}
	if o := w.update(w.selfEntry(rev + 2)); o.Claim != ClaimHeld || o.State != StateSynced || len(devicePrefixes(t, w.dev)) != 1 {
		t.Fatalf("after the record came back: claim %s, state %s, device %v", o.Claim, o.State, devicePrefixes(t, w.dev))
	}
}

// A quiet minute after a contest forgets it.
func TestContestMemory(t *testing.T) {
	var ct contest
	t0 := time.Now()
	for i := range maxDefends {
		if _, giveUp := ct.next(uint64(10+i), t0); giveUp {
			t.Fatalf("gave up at defend %d", i)
		}
	}
	ct.held(t0.Add(contestMemory - time.Second))
	if _, giveUp := ct.next(99, t0); !giveUp {
		t.Fatal("a contest within a minute did not count the earlier defends")
	}
	ct = contest{}
	for i := range maxDefends {
		ct.next(uint64(10+i), t0)
	}
	ct.held(t0.Add(contestMemory))
	if _, giveUp := ct.next(99, t0.Add(contestMemory)); giveUp {
		t.Fatal("a contest a quiet minute later still counted the old defends")
	}
}

// A host releases its older records under prefixes it left, once its own
// claim is held: they route nothing, and they keep the prefix from a claim.
func TestMovedHostReleasesItsOldRecord(t *testing.T) {
	w := newWorld(t)
	old := signedEntry(w.priv, "self", netip.MustParsePrefix("fd10:7::/48"), 1)
	o := w.snapshot(old, w.selfEntry(2))
	if d := cmp.Diff([]peer.Stale{{Key: old.Key, Revision: 1, Seq: 1}}, o.Repair.Release); d != "" || o.Claim != ClaimHeld {
		t.Fatalf("claim %s, release (-want +got):\n%s", o.Claim, d)
	}
}

// A key rotation: the device takes the new key at once; the controller
// asks for the handover record to be written over its old record (no
// contest) and starts no handshake itself: each peer does when it applies
// the record. A peer that applies a handover starts the handshake.
func TestKeyRotation(t *testing.T) {
	w := newWorld(t)
	a, aKey := hostEntry(t, 2, 2)
	w.snapshot(w.selfEntry(1), a)
	next := wgtest.PrivateKey(t)
	if err := w.ctl.Rotate(next); err != nil {
		t.Fatal(err)
	}
	if w.dev.PublicKey() != next.PublicKey() {
		t.Fatal("the device kept the old key")
	}
	o := w.ctl.Pass(false)
	if p, _ := devicePeer(t, w, aKey); p.Endpoint != nil {
		t.Errorf("the peer kept its endpoint through the rotation (%v): this end would start handshakes the peer refuses", p.Endpoint)
	}
	if o.Claim != ClaimContested || o.Repair.Defend != 1 || w.ctl.contest.defends != 0 {
		t.Fatalf("before the handover is in: claim %s, repair %+v, defends %d", o.Claim, o.Repair, w.ctl.contest.defends)
	}
	r := peer.Record{Name: "self", PublicKey: next.PublicKey().String(), AdvertiseAddress: "198.18.0.20", AllowedIP: selfPrefix.String(), WGPort: 51820, Seq: 3}
	if err := rules.SignHandover(&r, w.priv); err != nil {
		t.Fatal(err)
	}
	if err := rules.SignRecord(&r, next); err != nil {
		t.Fatal(err)
	}
	handover := peer.Write{Key: peer.Key(selfPrefix), Value: r.Encode(), Revision: 3}
	if o := w.update(handover); o.Claim != ClaimHeld || o.Err() != nil || w.ctl.rotating != nil {
		t.Fatalf("after the handover: claim %s, err %v, rotating %v", o.Claim, o.Err(), w.ctl.rotating)
	}

	// The other side: a peer applying a handover record starts the
	// handshake with the new key, though the record is newer than its own.
	p := newWorld(t)
	bravo, bravoNext := wgtest.PrivateKey(t), wgtest.PrivateKey(t)
	at := netip.MustParsePrefix("fd10:5::/48")
	p.snapshot(p.selfEntry(1), signedEntry(bravo, "bravo", at, 2))
	r2 := peer.Record{Name: "bravo", PublicKey: bravoNext.PublicKey().String(), AdvertiseAddress: "198.18.0.20", AllowedIP: at.String(), WGPort: 51820, Seq: 3}
	if err := rules.SignHandover(&r2, bravo); err != nil {
		t.Fatal(err)
	}
	if err := rules.SignRecord(&r2, bravoNext); err != nil {
		t.Fatal(err)
	}
	p.ctl.Load(peer.Batch{Entries: []peer.Write{{Key: peer.Key(at), Value: r2.Encode(), Revision: 3}}})
	p.ctl.Pass(false)
	if ct, ok := p.ctl.contacts[bravoNext.PublicKey()]; !ok || !ct.starts || !ct.restarts {
		t.Errorf("a peer applying the handover: contact %+v, %v; want it to start the handshake", ct, ok)
	}
}

// What a snapshot asks is asked by the pass that follows it, whichever way
// that pass ends, and never later: a revocation the bucket lost, noticed by
// a snapshot whose pass stood down, is not written back after an operator
// lifted it while this host was down.
func TestPassTakesWhatTheSnapshotAsked(t *testing.T) {
	w := newWorld(t)
	_, xKey := hostEntry(t, 5, 1)
	revoked := peer.Write{Key: peer.RevokedKey(xKey), Value: []byte("{}"), Revision: 2}
	w.snapshot(w.selfEntry(1), revoked)
	rev := uint64(10)
	for range maxDefends {
		intruder, _ := hostEntry(t, 1, rev)
		w.update(intruder)
		w.update(w.selfEntry(rev + 1))
		rev += 2
	}
	// A snapshot of a bucket that lost the revocation, with an intruder at
	// our prefix once too often: the pass stands down and asks nothing.
	intruder, _ := hostEntry(t, 1, rev)
	if o := w.snapshot(intruder); o.State != StateStandingDown || !o.Repair.Empty() {
		t.Fatalf("stand-down pass: state %s, repair %+v", o.State, o.Repair)
	}
	// The operator lifts the revocation; the intruder is evicted and our
	// record is back.
	if o := w.update(
		peer.Write{Key: revoked.Key, Revision: rev + 1, Deleted: true},
		peer.Write{Key: peer.Key(selfPrefix), Revision: rev + 2, Deleted: true},
	); !o.Repair.Reclaim || len(o.Repair.Revoke) != 0 {
		t.Fatalf("prefix free again: repair %+v, want a reclaim and no revocation (the operator lifted it)", o.Repair)
	}
	if o := w.update(w.selfEntry(rev + 3)); o.Claim != ClaimHeld || len(o.Repair.Revoke) != 0 {
		t.Fatalf("after resuming: claim %s, revocations to write back %v (the operator lifted it)", o.Claim, o.Repair.Revoke)
	}
}
