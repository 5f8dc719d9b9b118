package mesh

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestDecide(t *testing.T) {
	self, other := newKey(t), newKey(t)
	prefix := netip.MustParsePrefix("fd10:1::/48")
	ours := &peer.Accepted{PublicKey: self, Prefix: prefix, Record: peer.Record{Name: "us"}}
	theirs := &peer.Accepted{PublicKey: other, Prefix: prefix, Record: peer.Record{Name: "intruder"}}
	garbage := &peer.Rejection{Key: peer.Key(prefix), Reason: peer.ReasonMalformed, Detail: "value is not a JSON peer record"}
	for _, tc := range []struct {
		name string
		d    peer.Delta
		want Verdict
		why  string
	}{
		{"our record", peer.Delta{Self: ours}, Member, ""},
		{"revoked", peer.Delta{Self: ours, SelfRevoked: true}, Evicted, "its public key " + self.String() + " was revoked"},
		{"deleted", peer.Delta{}, Evicted, "its record " + peer.Key(prefix) + " was deleted"},
		{"garbage", peer.Delta{SelfRejected: garbage}, TakenOver, "the record at fd10:1::/48 is no longer ours (value is not a JSON peer record)"},
		{"another key", peer.Delta{Self: theirs}, TakenOver, `fd10:1::/48 is now held by "intruder" (public key ` + other.String() + ")"},
		// A revocation is a command: it wins over whatever the record says.
		{"revoked and overwritten", peer.Delta{Self: theirs, SelfRevoked: true}, Evicted, "its public key " + self.String() + " was revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, why := Decide(tc.d, self, prefix)
			if v != tc.want || why != tc.why {
				t.Errorf("Decide = %v, %q; want %v, %q", v, why, tc.want, tc.why)
			}
		})
	}
}

func newKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}
