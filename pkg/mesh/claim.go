package mesh

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Claim is the state of this host's own claim, as the controller judges what
// the bucket says at its prefix. Only explicit, attributable writes are
// commands (a delete marker on a record that was ours, a revocation of our
// key); loss of state is healed.
type Claim string

// The claim states.
const (
	// ClaimHeld: our valid record is at our key.
	ClaimHeld Claim = "held"
	// ClaimMissing: nothing is at our key (a re-created or restored bucket),
	// or a delete followed someone else's record there. We write ours back.
	ClaimMissing Claim = "missing"
	// ClaimContested: another key's record, or a value that is not a
	// record, sits at our key. We restore ours on the revision we saw.
	ClaimContested Claim = "contested"
	// ClaimLost: another key kept winning the contest; this host stood
	// down (no peers) and waits for its record to come back.
	ClaimLost Claim = "lost"
	// ClaimEvicted: our record was deleted, or our key revoked (commands).
	ClaimEvicted Claim = "evicted"
)

// Judge reads what the table says of this host's own claim — for public
// key self — and returns the claim's state and, unless held, why in words
// for the log. Controller acts on it.
func Judge(d peer.Delta, self wgtypes.Key, prefix netip.Prefix) (Claim, string) {
	switch {
	case d.SelfRevoked:
		return ClaimEvicted, "its public key " + self.String() + " was revoked"
	case d.SelfEvicted != "":
		return ClaimEvicted, d.SelfEvicted
	case d.Self != nil && d.Self.PublicKey == self:
		return ClaimHeld, ""
	case d.SelfRejected != nil:
		return ClaimContested, fmt.Sprintf("the record at %s is no longer ours (%s)", prefix, d.SelfRejected.Detail)
	case d.Self != nil:
		return ClaimContested, fmt.Sprintf("%s is now held by %q (public key %s)", prefix, d.Self.Name, d.Self.PublicKey)
	}
	return ClaimMissing, "there is no record at " + peer.Key(prefix) + " (a re-created or restored bucket, or a delete that is no command)"
}

// heal decides what the bucket must be asked for this host's claim
// (o.Repair) and whether the host stands down (o.Claim then says why:
// evicted, or lost a contest).
func (c *Controller) heal(o *Outcome, d peer.Delta, now time.Time) (standDown bool) {
	switch o.Claim {
	case ClaimEvicted:
		return true
	case ClaimHeld:
		c.selfRev, c.selfSeq = d.Self.Revision, d.Self.Seq
		o.Repair.Release = stale(d.Rejected, c.table.At)
		if c.rotating != nil {
			c.log.Info("rotated this host's key", "from", c.rotating.from, "to", c.self.Key)
			c.rotating = nil
		}
	case ClaimMissing:
		o.Repair.Reclaim = true
	case ClaimContested:
		if r := c.rotating; r != nil && d.Self != nil && d.Self.PublicKey == r.from {
			o.Repair.Defend = d.Self.Revision // the handover, over the old key's record
			return false
		}
		if c.contest.lost {
			return false
		}
		rev, giveUp := c.contest.next(foreignRevision(d), now)
		if giveUp {
			c.contest.lost = true
			c.log.Error("another key keeps taking this host's prefix; standing down until the record is ours again. "+
				"If that host should not hold it, evict it with ikto-admin evict", "prefix", c.self.Prefix, "why", o.Why)
			o.Claim = ClaimLost
			return true
		}
		o.Repair.Defend = rev
		c.log.Warn("this host's claim is contested; restoring its record", "prefix", c.self.Prefix, "why", o.Why, "revision", rev)
	}
	return false
}

// writeBack are the signed records of other hosts the bucket lost (§5):
// any agent may write them back, where its credentials allow.
func (c *Controller) writeBack() []peer.Lost {
	var out []peer.Lost
	for _, a := range c.table.Missing() {
		if a.PublicKey != c.self.Key {
			out = append(out, peer.Lost{Key: a.Key, Value: a.Record.Encode()})
		}
	}
	return out
}

// lostRevocations are the revocations the table keeps that the snapshot
// just loaded (entries, markers included) lacks: the bucket lost them. Only
// a snapshot can tell.
func (c *Controller) lostRevocations(entries []peer.Write) []peer.Lost {
	inSnapshot := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Key, peer.RevokedPrefix) {
			inSnapshot[e.Key] = true
		}
	}
	var lost []peer.Lost
	for _, k := range c.table.RevokedKeys() {
		if key := peer.RevokedKey(k); !inSnapshot[key] {
			lost = append(lost, peer.Lost{Key: key, Value: c.table.Revocation(k)})
		}
	}
	return lost
}

// contest is the controller's memory of fights over its prefix.
type contest struct {
	defends  int       // restores asked for in this contest
	defended uint64    // revision of the foreign value last defended against
	last     time.Time // when a defend was last asked for
	lost     bool      // gave up: stood down until the record is ours again
}

// next decides the repair for a contested claim at revision rev: defend it,
// or — once the defends are spent on newer foreign writes — give up.
func (ct *contest) next(rev uint64, now time.Time) (defend uint64, giveUp bool) {
	if rev == ct.defended {
		return rev, false // the restore asked for has not landed yet
	}
	if ct.defends >= maxDefends {
		return 0, true
	}
	ct.defends++
	ct.defended, ct.last = rev, now
	return rev, false
}

// held is called on every pass that finds the claim held.
func (ct *contest) held(now time.Time) {
	ct.lost = false
	if ct.defends > 0 && now.Sub(ct.last) >= contestMemory {
		*ct = contest{}
	}
}

// stale are this host's older records under prefixes it left: rejected as
// its own key elsewhere. They route nothing; deleting them frees the
// prefixes.
func stale(rejected []peer.Rejection, at func(key string) (peer.Accepted, bool, bool)) []peer.Stale {
	var out []peer.Stale
	for _, r := range rejected {
		if r.Reason == peer.ReasonOwnKey {
			s := peer.Stale{Key: r.Key, Revision: r.Revision}
			if a, valid, _ := at(r.Key); valid {
				s.Seq = a.Seq
			}
			out = append(out, s)
		}
	}
	return out
}

// foreignRevision is the revision of whatever is at our key in d.
func foreignRevision(d peer.Delta) uint64 {
	if d.Self != nil {
		return d.Self.Revision
	}
	if d.SelfRejected != nil {
		return d.SelfRejected.Revision
	}
	return 0
}
