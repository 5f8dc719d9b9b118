package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// copyOf is a record of key k at fd10:<n>::/48 with an endpoint of its own:
// what anyone who may write every key can forge.
func copyOf(k wgtypes.Key, n int, rev uint64) bucket.Entry {
	p := netip.MustParsePrefix(fmt.Sprintf("fd10:%x::/48", n))
	r := peer.Record{Name: "forged", PublicKey: k.String(), AdvertiseAddress: "198.18.0.250", AllowedIP: p.String(), WGPort: 51820}
	return bucket.Entry{Key: peer.Key(p), Value: r.Encode(), Revision: rev}
}

// copiedWorld is a controller that routes a host at fd10:2::/48 and has seen a
// younger copy of its key at fd10:9::/48 (rejected: the older record keeps
// the key).
func copiedWorld(t *testing.T) (w *world, host bucket.Entry, hostKey wgtypes.Key, copied bucket.Entry) {
	t.Helper()
	w = newWorld(t)
	host, hostKey = hostEntry(t, 2, 2)
	copied = copyOf(hostKey, 9, 7)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host, copied}})
	w.ctl.Pass(false)
	return w, host, hostKey, copied
}

// routes is the device's peers as public key → prefixes.
func routes(t *testing.T, w *world) map[wgtypes.Key][]string {
	t.Helper()
	peers, err := w.dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[wgtypes.Key][]string{}
	for _, p := range peers {
		for _, n := range p.AllowedIPs {
			out[p.PublicKey] = append(out[p.PublicKey], n.String())
		}
	}
	return out
}

// A host's record that goes without a command leaves its key bound to the
// prefix it had: a copy of the key elsewhere (which only its host may
// release, and cannot while it is cut off) is not routed until the record
// is back, a command, or the grace's end.
func TestCopyWaitsWhileItsHostsRecordIsDisplaced(t *testing.T) {
	const hostAt, copyAt = "fd10:2::/48", "fd10:9::/48"
	for _, tc := range []struct {
		name string
		// displace is what happens at the host's key (fd10:2::/48).
		displace func(w *world, host, copy bucket.Entry, member wgtypes.Key) bucket.Batch
		// want is where the host's key is routed just after; off says the
		// host is not on the device at all (another key holds its prefix).
		want string
		off  bool
		held int
	}{
		{"garbage over its record", func(_ *world, host, _ bucket.Entry, _ wgtypes.Key) bucket.Batch {
			return bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: []byte("not a record"), Revision: 20}}}
		}, hostAt, false, 1},
		// The member's older record keeps its key at its own prefix: the
		// copy is routed nowhere and takes nothing from the host.
		{"another member's record over its record", func(_ *world, host, _ bucket.Entry, member wgtypes.Key) bucket.Batch {
			return bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: peerRecord(member, hostAt), Revision: 20}}}
		}, hostAt, false, 1},
		{"a takeover by a fresh key", func(_ *world, host, _ bucket.Entry, _ wgtypes.Key) bucket.Batch {
			return bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: peerRecord(newKeyNoT(), hostAt), Revision: 20}}}
		}, "", true, 0},
		{"the bucket made again with the copy in it", func(w *world, _, copy bucket.Entry, _ wgtypes.Key) bucket.Batch {
			c := copy
			c.Revision = 2
			return bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), c}}
		}, hostAt, false, 2}, // the third host is held too
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			host, hostKey := hostEntry(t, 2, 2)
			member, memberKey := hostEntry(t, 3, 3)
			forged := copyOf(hostKey, 9, 7) // younger than the record: rejected
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host, member, forged}})
			w.ctl.Pass(false)
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{hostAt}) {
				t.Fatalf("start: host routed to %v", got)
			}
			w.ctl.Load(tc.displace(w, host, forged, memberKey))
			o := w.ctl.Pass(false)
			got := routes(t, w)[hostKey]
			switch {
			case tc.off && got != nil:
				t.Fatalf("displaced: host routed to %v; want it off the device (another key holds its prefix)", got)
			case !tc.off && !cmp.Equal(got, []string{hostAt}):
				t.Fatalf("displaced: host routed to %v; want %s (held, the copy not applied)", got, hostAt)
			}
			if o.Held != tc.held {
				t.Errorf("held %d, want %d", o.Held, tc.held)
			}
			// The grace ends with the record still gone: the table's word goes.
			v := w.ctl.vanished[hostKey]
			v.until = time.Now().Add(-time.Second)
			w.ctl.vanished[hostKey] = v
			w.ctl.Pass(true)
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{copyAt}) {
				t.Fatalf("after the grace: host routed to %v; want the copy's %s", got, copyAt)
			}
		})
	}
}

// The host comes back: it writes its record again (a newer revision than the
// copy, which the table then prefers until the copy is released) and releases
// the copy. The peer is routed to its prefix throughout, and put back at once
// when an intruder that held the prefix goes.
func TestBoundPeerComesBack(t *testing.T) {
	const hostAt = "fd10:2::/48"
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			w, host, hostKey, forged := copiedWorld(t)
			over := []byte("garbage")
			if takeover {
				over = peerRecord(newKeyNoT(), hostAt)
			}
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: over, Revision: 20}}})
			w.ctl.Pass(false)
			back := host
			back.Revision = 21
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{back}})
			w.ctl.Pass(false)
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{hostAt}) {
				t.Fatalf("record back, copy still there: host routed to %v; want %s", got, hostAt)
			}
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: forged.Key, Revision: 22, Deleted: true}}})
			o := w.ctl.Pass(false)
			_, bound := w.ctl.vanished[hostKey]
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{hostAt}) || o.Held != 0 || bound {
				t.Fatalf("copy released: host routed to %v, held %d, bound %v; want %s, none", got, o.Held, bound, hostAt)
			}
			// (An intruder whose record the host overwrote is bound off the
			// device: nothing of its key is routed for the grace.)
			if got := len(routes(t, w)); got != 1 {
				t.Fatalf("%d peers on the device, want the host alone", got)
			}
		})
	}
}

// Commands end a binding at once: the key revoked takes the peer off; a
// delete at its old prefix (the host released it: it moved) routes the
// key's record elsewhere.
func TestCommandsEndABinding(t *testing.T) {
	w, host, hostKey, _ := copiedWorld(t)
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: []byte("garbage"), Revision: 20}}})
	w.ctl.Pass(false)
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: peer.RevokedKey(hostKey), Value: []byte("{}"), Revision: 21}}})
	w.ctl.Pass(false)
	if got := routes(t, w)[hostKey]; got != nil {
		t.Fatalf("after its revocation: host routed to %v", got)
	}
	if len(w.ctl.vanished) != 0 {
		t.Fatalf("%d bindings left", len(w.ctl.vanished))
	}
}

// A delete at a bound prefix removes what displaced the host's record — a
// copy of another host's key its owner released, garbage an operator
// deleted — and says nothing of the host: it stays routed at its prefix
// until its record is back, and no packet is lost meanwhile.
func TestDeleteAtABoundPrefixIsNoCommand(t *testing.T) {
	for _, displaced := range []string{"garbage", "a copy of another host's record"} {
		t.Run(displaced, func(t *testing.T) {
			w := newWorld(t)
			host, hostKey := hostEntry(t, 2, 2)
			other, otherKey := hostEntry(t, 3, 3)
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host, other}})
			w.ctl.Pass(false)
			value := []byte("garbage")
			if displaced != "garbage" {
				value = peerRecord(otherKey, "fd10:2::/48") // the older record keeps otherKey
			}
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: value, Revision: 20}}})
			w.ctl.Pass(false)
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Revision: 21, Deleted: true}}})
			if o := w.ctl.Pass(false); len(o.Plan.Remove) != 0 {
				t.Fatalf("the delete removed %v", o.Plan.Remove)
			}
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:2::/48"}) {
				t.Fatalf("after the delete: host routed to %v, want its own prefix", got)
			}
			back := host
			back.Revision = 22
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{back}})
			w.ctl.Pass(false)
			if len(w.ctl.vanished) != 0 {
				t.Fatalf("%d bindings left after the record came back", len(w.ctl.vanished))
			}
		})
	}
}

// A host that moves the ordinary way (its new record, then a release of the
// old one) is routed at its new prefix at once: nothing went without a
// command.
func TestMoveByReleaseIsNotHeld(t *testing.T) {
	w := newWorld(t)
	host, hostKey := hostEntry(t, 2, 2)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host}})
	w.ctl.Pass(false)
	w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{copyOf(hostKey, 9, 7), {Key: host.Key, Revision: 8, Deleted: true, Released: true}}})
	if o := w.ctl.Pass(false); o.Held != 0 {
		t.Fatalf("held %d", o.Held)
	}
	if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:9::/48"}) {
		t.Fatalf("host routed to %v; want its new prefix", got)
	}
}

func peerRecord(k wgtypes.Key, prefix string) []byte {
	r := peer.Record{Name: "other", PublicKey: k.String(), AdvertiseAddress: "198.18.0.30", AllowedIP: prefix, WGPort: 51820}
	return r.Encode()
}

func newKeyNoT() wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		panic(err)
	}
	return k.PublicKey()
}

// Two keys bound to one prefix (a takeover, then garbage over the intruder)
// never share it on the device: the one whose record is there has it.
func TestBoundPeersNeverShareAPrefix(t *testing.T) {
	const hostAt = "fd10:2::/48"
	w, host, hostKey, _ := copiedWorld(t)
	intruder := newKeyNoT()
	steps := []struct {
		value []byte
		want  map[wgtypes.Key][]string
	}{
		{peerRecord(intruder, hostAt), map[wgtypes.Key][]string{intruder: {hostAt}}},
		{[]byte("garbage"), map[wgtypes.Key][]string{intruder: {hostAt}}},
		{host.Value, map[wgtypes.Key][]string{hostKey: {hostAt}}},
		{[]byte("garbage"), map[wgtypes.Key][]string{hostKey: {hostAt}}},
		{peerRecord(intruder, hostAt), map[wgtypes.Key][]string{intruder: {hostAt}}},
	}
	for i, s := range steps {
		w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{{Key: host.Key, Value: s.value, Revision: uint64(20 + i)}}})
		w.ctl.Pass(false)
		if d := cmp.Diff(s.want, routes(t, w)); d != "" {
			t.Fatalf("step %d (%.20q): device (-want +got):\n%s", i, s.value, d)
		}
	}
}

// An agent that starts while a host's record is garbled and a copy of its key
// sits elsewhere binds the key as a running agent would have: the record it
// restored from its state (what it last applied) is what it keeps.
func TestRestoredRecordBindsItsKey(t *testing.T) {
	w := newWorld(t)
	host, hostKey := hostEntry(t, 2, 2)
	before := peer.NewTable(w.ctl.self.Rules, w.key, selfPrefix)
	before.Put(host.Key, host.Value, host.Revision)
	w.ctl.Restore(before.Resolve().Peers)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{
		w.selfEntry(1), {Key: host.Key, Value: []byte("garbage"), Revision: 9}, copyOf(hostKey, 9, 7)}})
	o := w.ctl.Pass(true)
	if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:2::/48"}) || o.Held != 1 {
		t.Fatalf("host routed to %v, held %d; want its restored prefix, held", got, o.Held)
	}
}

// A snapshot without a revocation the agent saw asks the keeper to write it
// back; one with the revocation, or with a marker at its key, does not.
func TestLostRevocationIsWrittenBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		has  func(k wgtypes.Key) []bucket.Entry
		want int
	}{
		{"bucket made again", func(wgtypes.Key) []bucket.Entry { return nil }, 1},
		{"revocation there", func(k wgtypes.Key) []bucket.Entry {
			return []bucket.Entry{{Key: peer.RevokedKey(k), Value: []byte("{}"), Revision: 3}}
		}, 0},
		{"unrevoked meanwhile", func(k wgtypes.Key) []bucket.Entry {
			return []bucket.Entry{{Key: peer.RevokedKey(k), Revision: 3, Deleted: true}}
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			evicted := newKeyNoT()
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), {Key: peer.RevokedKey(evicted), Value: []byte("{}"), Revision: 2}}})
			if o := w.ctl.Pass(false); len(o.Repair.Revoke) != 0 {
				t.Fatalf("first snapshot asks to write back %v", o.Repair.Revoke)
			}
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: append([]bucket.Entry{w.selfEntry(1)}, tc.has(evicted)...)})
			o := w.ctl.Pass(false)
			if len(o.Repair.Revoke) != tc.want {
				t.Fatalf("asks to write back %v, want %d", o.Repair.Revoke, tc.want)
			}
			// Only a snapshot can tell: the next pass asks nothing.
			if o := w.ctl.Pass(false); len(o.Repair.Revoke) != 0 {
				t.Fatalf("a pass without a snapshot asks to write back %v", o.Repair.Revoke)
			}
		})
	}
}

// A host that moved while the bucket was lost (its old record missing from
// the new bucket, its new one there) is routed at its new prefix after
// MoveHold, not the whole grace; one whose record was overwritten waits the
// grace.
func TestMoveHeldBriefAfterABucketLoss(t *testing.T) {
	for _, overwritten := range []bool{false, true} {
		t.Run(fmt.Sprintf("overwritten=%v", overwritten), func(t *testing.T) {
			w := newWorld(t)
			host, hostKey := hostEntry(t, 2, 2)
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host}})
			w.ctl.Pass(false)
			moved := copyOf(hostKey, 9, 3)
			entries := []bucket.Entry{w.selfEntry(1), moved}
			if overwritten {
				entries = append(entries, bucket.Entry{Key: host.Key, Value: []byte("garbage"), Revision: 4})
			}
			w.ctl.Load(bucket.Batch{Snapshot: true, Entries: entries})
			w.ctl.Pass(false)
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:2::/48"}) {
				t.Fatalf("host routed to %v; want held at its old prefix", got)
			}
			v := w.ctl.vanished[hostKey]
			if hold := v.moveAfter.Sub(v.until) + VanishGrace; overwritten && hold != VanishGrace || !overwritten && hold > MoveHold+time.Second {
				t.Fatalf("move held for %s", hold)
			}
			due := w.ctl.nextBinding(time.Now())
			if want := v.moveAfter; !due.Equal(want) {
				t.Fatalf("next binding change at %s, want %s", due, want)
			}
			// MoveHold over.
			v.moveAfter = time.Now().Add(-time.Millisecond)
			w.ctl.vanished[hostKey] = v
			w.ctl.Pass(false)
			if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:9::/48"}) {
				t.Fatalf("after the hold: host routed to %v; want its new prefix", got)
			}
		})
	}
}

// The loop ends a move's hold on time by itself, in a quiet bucket with an
// hour between resyncs.
func TestRunEndsAMoveHoldOnTime(t *testing.T) {
	w := newWorld(t)
	host, hostKey := hostEntry(t, 2, 2)
	batches := make(chan bucket.Batch, 4)
	batches <- bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), host}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outcomes := make(chan Outcome, 64)
	done := make(chan error, 1)
	go func() {
		done <- w.ctl.Run(ctx, Inputs{Batches: batches, Resync: time.Hour, Publish: func(o Outcome) { outcomes <- o }})
	}()
	<-outcomes
	start := time.Now()
	batches <- bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(1), copyOf(hostKey, 9, 3)}}
	for o := range outcomes {
		if o.Held == 0 {
			break
		}
		if time.Since(start) > MoveHold+5*time.Second {
			t.Fatal("the hold did not end")
		}
	}
	took := time.Since(start)
	if took < MoveHold-time.Second || took > MoveHold+3*time.Second {
		t.Fatalf("the move was applied after %s, want about %s", took, MoveHold)
	}
	t.Logf("move applied %s after the snapshot (MoveHold %s)", took.Round(time.Millisecond), MoveHold)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := routes(t, w)[hostKey]; !cmp.Equal(got, []string{"fd10:9::/48"}) {
		t.Fatalf("host routed to %v; want its new prefix", got)
	}
}
