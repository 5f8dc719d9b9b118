package main

import (
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// evictionReport is evict's -o json output: the host, what was (or, with
// --dry-run, would be) deleted and revoked.
type evictionReport struct {
	Key       string `json:"key"`
	Revision  uint64 `json:"revision"`
	Name      string `json:"name"`
	AllowedIP string `json:"allowed_ip"`
	PublicKey string `json:"public_key"`
	// RevokedKey is the revocation record written; empty when the record's
	// public key is not a valid key, so there was nothing to revoke.
	RevokedKey string `json:"revoked_key"`
	// AlsoAt are the prefixes of other records of the same public key.
	AlsoAt  []string `json:"also_at,omitempty"`
	DryRun  bool     `json:"dry_run"`
	Evicted bool     `json:"evicted"`
}

// newEvictionReport describes the eviction e; evicted says it happened.
func newEvictionReport(e eviction, dryRun, evicted bool) evictionReport {
	h := e.holder
	r := evictionReport{
		Key: h.Key, Revision: h.Revision, Name: h.Record.Name, AllowedIP: h.Record.AllowedIP,
		PublicKey: h.Record.PublicKey, DryRun: dryRun, Evicted: evicted,
	}
	if pk, err := wgtypes.ParseKey(h.Record.PublicKey); err == nil && pk != (wgtypes.Key{}) && e.revoke {
		r.RevokedKey = peer.RevokedKey(pk)
	}
	for _, c := range e.others {
		r.AlsoAt = append(r.AlsoAt, c.Record.AllowedIP)
	}
	return r
}
