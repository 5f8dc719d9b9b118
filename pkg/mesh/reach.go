package mesh

import (
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Reach tells, from a device's byte counters read now and then, which peers
// this host sends to without hearing back: a cut path, a dead host, a
// firewall. Idle peers (nothing sent) are never unreachable. Not safe for
// concurrent use.
type Reach struct {
	seen map[wgtypes.Key]heard
}

type heard struct {
	rx, tx int64
	rxAt   time.Time // when rx last grew (or the peer was first seen)
}

// Unreachable reads peers at now and returns the public keys of those that
// were sent to since the last read but have been silent for Unheard, sorted.
func (r *Reach) Unreachable(peers []wgtypes.Peer, now time.Time) []string {
	if r.seen == nil {
		r.seen = map[wgtypes.Key]heard{}
	}
	var out []string
	next := make(map[wgtypes.Key]heard, len(peers))
	for _, p := range peers {
		h, known := r.seen[p.PublicKey]
		if !known || p.ReceiveBytes != h.rx {
			h.rxAt = now
		}
		sent := known && p.TransmitBytes > h.tx
		h.rx, h.tx = p.ReceiveBytes, p.TransmitBytes
		next[p.PublicKey] = h
		if sent && now.Sub(h.rxAt) >= Unheard {
			out = append(out, p.PublicKey.String())
		}
	}
	r.seen = next
	slices.Sort(out)
	return out
}
