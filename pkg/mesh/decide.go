package mesh

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Decide reads what the bucket now says about this host — public key self,
// claiming prefix — and returns its verdict and, when it is not Member, why,
// in words for the log and the exit message. It is the whole of the
// membership policy: the controller acts on its answer.
func Decide(d peer.Delta, self wgtypes.Key, prefix netip.Prefix) (Verdict, string) {
	switch {
	case d.SelfRevoked:
		return Evicted, "its public key " + self.String() + " was revoked"
	case d.SelfRejected != nil:
		return TakenOver, fmt.Sprintf("the record at %s is no longer ours (%s)", prefix, d.SelfRejected.Detail)
	case d.Self == nil:
		return Evicted, "its record " + peer.Key(prefix) + " was deleted"
	case d.Self.PublicKey != self:
		return TakenOver, fmt.Sprintf("%s is now held by %q (public key %s)", prefix, d.Self.Name, d.Self.PublicKey)
	}
	return Member, ""
}
