package mesh

import (
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// A copy of another host's record written over this host's claim, and the
// delete with which that host releases the copy, read in one batch or in
// two before one pass: the marker follows a foreign value, so the claim is
// missing (written back), never evicted.
func TestCopyOverOurClaimReleasedIsNoEviction(t *testing.T) {
	for _, split := range []bool{false, true} {
		w, _, otherKey := heldWorld(t)
		r := peer.Record{Name: "copy", PublicKey: otherKey.String(), AdvertiseAddress: "198.18.0.20", AllowedIP: selfPrefix.String(), WGPort: 51820}
		put := bucket.Entry{Key: peer.Key(selfPrefix), Value: r.Encode(), Revision: 17}
		del := bucket.Entry{Key: peer.Key(selfPrefix), Revision: 18, Deleted: true}
		if split {
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{put}})
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{del}})
		} else {
			w.ctl.Load(bucket.Batch{Entries: []bucket.Entry{put, del}})
		}
		o := w.ctl.Pass(false)
		if o.Claim != ClaimMissing || o.Err() != nil {
			t.Errorf("split %v: claim %s (%s), err %v; want missing", split, o.Claim, o.Why, o.Err())
		}
	}
}

// A re-read of the bucket (after a reconnect) that shows only the marker at
// this host's key, where the last value it saw was its own record: a release
// marker (its watch missed the copy before it) leaves the claim missing, to
// be written back; an ordinary marker is an eviction.
func TestReleaseMarkerInASnapshotIsNoEviction(t *testing.T) {
	for _, released := range []bool{true, false} {
		w, other, _ := heldWorld(t)
		marker := bucket.Entry{Key: peer.Key(selfPrefix), Revision: 18, Deleted: true, Released: released}
		w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{marker, other}})
		o := w.ctl.Pass(false)
		want := ClaimEvicted
		if released {
			want = ClaimMissing
		}
		if o.Claim != want {
			t.Errorf("released %v: claim %s (%s), want %s", released, o.Claim, o.Why, want)
		}
	}
}

// heldWorld is a controller that holds its claim, with one other host.
func heldWorld(t *testing.T) (*world, bucket.Entry, wgtypes.Key) {
	t.Helper()
	w := newWorld(t)
	other, otherKey := hostEntry(t, 2, 2)
	w.ctl.Load(bucket.Batch{Snapshot: true, Entries: []bucket.Entry{w.selfEntry(5), other}})
	if o := w.ctl.Pass(false); o.Claim != ClaimHeld {
		t.Fatalf("start: claim %s", o.Claim)
	}
	return w, other, otherKey
}
