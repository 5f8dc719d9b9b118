package mesh

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestJudge(t *testing.T) {
	self, other := newKey(t), newKey(t)
	prefix := netip.MustParsePrefix("fd10:1::/48")
	ours := &peer.Accepted{PublicKey: self, Prefix: prefix, Record: peer.Record{Name: "us"}}
	theirs := &peer.Accepted{PublicKey: other, Prefix: prefix, Record: peer.Record{Name: "intruder"}}
	garbage := &peer.Rejection{Key: peer.Key(prefix), Reason: peer.ReasonMalformed, Detail: "value is not a JSON peer record"}
	for _, tc := range []struct {
		name     string
		d        peer.Delta
		oursLast bool
		want     Claim
		why      string
	}{
		{"our record", peer.Delta{Self: ours}, true, ClaimHeld, ""},
		{"revoked", peer.Delta{Self: ours, SelfRevoked: true}, true, ClaimEvicted, "its public key " + self.String() + " was revoked"},
		// A revocation is a command: it wins over whatever the record says.
		{"revoked and overwritten", peer.Delta{Self: theirs, SelfRevoked: true}, false, ClaimEvicted, "its public key " + self.String() + " was revoked"},
		{"deleted after ours", peer.Delta{SelfDeleted: true}, true, ClaimEvicted, "its record " + peer.Key(prefix) + " was deleted"},
		{"deleted after another's", peer.Delta{SelfDeleted: true}, false, ClaimMissing, "the record another key held at fd10:1::/48 was deleted"},
		// Another key's write and the delete that released it, read in one
		// batch: the controller never saw the foreign record, the table did.
		{"deleted after another's, in one batch", peer.Delta{SelfDeleted: true, SelfDeletedForeign: true}, true, ClaimMissing, "the record another key held at fd10:1::/48 was deleted"},
		{"never written", peer.Delta{}, true, ClaimMissing, "there is no record at " + peer.Key(prefix) + " (a re-created or restored bucket)"},
		{"garbage", peer.Delta{SelfRejected: garbage}, true, ClaimContested, "the record at fd10:1::/48 is no longer ours (value is not a JSON peer record)"},
		{"another key", peer.Delta{Self: theirs}, true, ClaimContested, `fd10:1::/48 is now held by "intruder" (public key ` + other.String() + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, why := Judge(tc.d, self, prefix, tc.oursLast)
			if c != tc.want || why != tc.why {
				t.Errorf("Judge = %v, %q; want %v, %q", c, why, tc.want, tc.why)
			}
		})
	}
}

// A record missing from the bucket (a re-created bucket) is written back and
// costs no peer; nor do the other hosts' records that vanished with it.
func TestMissingRecordsAreHealedNotObeyed(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	b, _ := hostEntry(t, 3, 3)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), a, b}})
	if o := w.ctl.Pass(false); o.Claim != ClaimHeld || !o.Repair.Empty() {
		t.Fatalf("first pass: claim %s, repair %+v", o.Claim, o.Repair)
	}
	// The bucket is made again, empty but for one host that wrote back.
	a1 := a
	a1.Revision = 1
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{a1}})
	o := w.ctl.Pass(false)
	if o.Err() != nil || o.Claim != ClaimMissing || !o.Repair.Reclaim || o.Held != 1 {
		t.Fatalf("after re-creation: claim %s, err %v, repair %+v, held %d", o.Claim, o.Err(), o.Repair, o.Held)
	}
	if d := cmp.Diff([]string{"fd10:2::/48", "fd10:3::/48"}, sorted(devicePrefixes(t, w.dev))); d != "" {
		t.Fatalf("device after re-creation (-want +got):\n%s", d)
	}
	// Our record and the other host's come back: nothing changed on the device.
	b1 := b
	b1.Revision = 3
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{w.selfEntry(2), b1}})
	// (No peer was taken off or added: the first contact of a peer that
	// came back is not started again either.)
	if o := w.ctl.Pass(false); o.Claim != ClaimHeld || o.Held != 0 || len(o.Plan.Add) != 0 || len(o.Plan.Remove) != 0 {
		t.Fatalf("after the write-backs: claim %s, held %d, plan %+v", o.Claim, o.Held, o.Plan)
	}
}

// A vanished peer whose key is then written by another host gives way at
// once: two peers must never carry one prefix.
func TestVanishedPeerGivesWayToANewHolder(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), a}})
	w.ctl.Pass(false)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1)}})
	if o := w.ctl.Pass(false); o.Held != 1 {
		t.Fatalf("held %d, want 1", o.Held)
	}
	newcomer, newKey := hostEntry(t, 2, 4) // another key draws fd10:2::/48
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{newcomer}})
	o := w.ctl.Pass(false)
	if o.Held != 0 || len(o.Plan.Remove) != 1 || len(o.Plan.Add) != 1 || o.Plan.Add[0].PublicKey != newKey {
		t.Fatalf("after the newcomer: held %d, plan %+v", o.Held, o.Plan)
	}
}

// Another key at our prefix is fought with compare-and-set a bounded number
// of times; then the host stands down, stays alive, and rejoins when the
// record is its own again.
func TestContestIsBoundedAndResumes(t *testing.T) {
	w := newWorld(t)
	a, _ := hostEntry(t, 2, 2)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), a}})
	w.ctl.Pass(false)
	rev := uint64(10)
	for i := range maxDefends {
		intruder, _ := hostEntry(t, 1, rev)
		w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{intruder}})
		o := w.ctl.Pass(false)
		if o.Claim != ClaimContested || o.Repair.Defend != rev || o.Err() != nil || len(devicePrefixes(t, w.dev)) != 1 {
			t.Fatalf("defend %d: claim %s, repair %+v, err %v", i, o.Claim, o.Repair, o.Err())
		}
		// Our restore lands, and the intruder writes again.
		w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{w.selfEntry(rev + 1)}})
		if o := w.ctl.Pass(false); o.Claim != ClaimHeld {
			t.Fatalf("after restore %d: claim %s", i, o.Claim)
		}
		rev += 2
	}
	intruder, _ := hostEntry(t, 1, rev)
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{intruder}})
	o := w.ctl.Pass(false)
	if o.Claim != ClaimLost || o.State != StateStandingDown || o.Err() != nil || len(devicePrefixes(t, w.dev)) != 0 {
		t.Fatalf("after the defends ran out: claim %s, state %s, err %v, device %v", o.Claim, o.State, o.Err(), devicePrefixes(t, w.dev))
	}
	// An operator evicts the intruder: its record is deleted. The prefix is
	// free again, so this host claims it back and rejoins.
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: peer.Key(selfPrefix), Revision: rev + 1, Deleted: true}}})
	if o := w.ctl.Pass(false); o.Claim != ClaimLost || !o.Repair.Reclaim || o.Err() != nil {
		t.Fatalf("after the intruder's eviction: claim %s, repair %+v, err %v", o.Claim, o.Repair, o.Err())
	}
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{w.selfEntry(rev + 2)}})
	if o := w.ctl.Pass(false); o.Claim != ClaimHeld || o.State != StateSynced || len(devicePrefixes(t, w.dev)) != 1 {
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

// A host releases every record of its key under another prefix once its
// own claim is held: the one it left when it moved, and a copy.
func TestMovedHostReleasesItsOldRecord(t *testing.T) {
	w := newWorld(t)
	old := peer.Record{Name: "self", PublicKey: w.key.String(), AdvertiseAddress: "198.18.0.10", AllowedIP: "fd10:7::/48", WGPort: 51820}
	oldKey := peer.Key(netip.MustParsePrefix("fd10:7::/48"))
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{{Key: oldKey, Value: old.Encode(), Revision: 1}, w.selfEntry(2)}})
	o := w.ctl.Pass(false)
	if d := cmp.Diff([]bucket.Stale{{Key: oldKey, Revision: 1}}, o.Repair.Release); d != "" || o.Claim != ClaimHeld || !o.Repair.Held {
		t.Fatalf("claim %s, held %v, release (-want +got):\n%s", o.Claim, o.Repair.Held, d)
	}
	// A copy of our key written after our claim is released too: whoever
	// wrote it, it must not take the key when our record is rewritten.
	later := old
	later.AllowedIP = "fd10:8::/48"
	laterKey := peer.Key(netip.MustParsePrefix("fd10:8::/48"))
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: oldKey, Revision: 3, Deleted: true}, {Key: laterKey, Value: later.Encode(), Revision: 4}}})
	if o := w.ctl.Pass(false); len(o.Repair.Release) != 1 || o.Repair.Release[0].Key != laterKey {
		t.Fatalf("a later copy of our key: release %+v", o.Repair.Release)
	}
}

// With its own record missing or contested, a host still asks for its key's
// copies to be released, before it writes its record back: a stranger's
// copy is then the key's only record, which every agent routes. The keeper
// leaves the host's own leftovers until the claim is held (Repair.Held).
func TestCopiesGoBeforeTheClaimIsWrittenBack(t *testing.T) {
	w, _, _ := heldWorld(t)
	copyRec := peer.Record{Name: "copy", PublicKey: w.key.String(), AdvertiseAddress: "198.18.0.250", AllowedIP: "fd10:9::/48", WGPort: 51820}
	copyKey := peer.Key(netip.MustParsePrefix("fd10:9::/48"))
	for _, tc := range []struct {
		name  string
		entry bucket.Entry
		want  Claim
	}{
		{"missing", bucket.Entry{Key: peer.Key(selfPrefix), Revision: 5, Deleted: true, Released: true}, ClaimMissing},
		{"contested", bucket.Entry{Key: peer.Key(selfPrefix), Value: []byte("garbage"), Revision: 6}, ClaimContested},
	} {
		w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{tc.entry, {Key: copyKey, Value: copyRec.Encode(), Revision: 7}}})
		o := w.ctl.Pass(false)
		if o.Claim != tc.want || o.Repair.Held || len(o.Repair.Release) != 1 || o.Repair.Release[0].Key != copyKey {
			t.Errorf("%s: claim %s, held %v, release %+v; want %s and the copy released", tc.name, o.Claim, o.Repair.Held, o.Repair.Release, tc.want)
		}
	}
}

// A command ends a vanished peer's grace at once: its key revoked. (A delete
// at its prefix is none: TestDeleteAtABoundPrefixIsNoCommand.)
func TestVanishedPeerGoesOnACommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command func(e bucket.Entry, k wgtypes.Key) bucket.Entry
	}{
		{"revoked", func(_ bucket.Entry, k wgtypes.Key) bucket.Entry {
			return bucket.Entry{Key: peer.RevokedKey(k), Value: []byte("{}"), Revision: 9}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			a, aKey := hostEntry(t, 2, 2)
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), a}})
			w.ctl.Pass(false)
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1)}}) // a re-made bucket
			if o := w.ctl.Pass(false); o.Held != 1 {
				t.Fatalf("held %d, want 1", o.Held)
			}
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{tc.command(a, aKey)}})
			if o := w.ctl.Pass(false); o.Held != 0 || len(o.Plan.Remove) != 1 || o.Plan.Remove[0] != aKey {
				t.Fatalf("after the command: held %d, plan %+v", o.Held, o.Plan)
			}
		})
	}
}
