package main

import (
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
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
	DryRun     bool   `json:"dry_run"`
	Evicted    bool   `json:"evicted"`
}

// newEvictionReport describes the eviction of h; evicted says it happened.
func newEvictionReport(h bucket.Holder, dryRun, evicted bool) evictionReport {
	r := evictionReport{
		Key: h.Key, Revision: h.Revision, Name: h.Record.Name, AllowedIP: h.Record.AllowedIP,
		PublicKey: h.Record.PublicKey, DryRun: dryRun, Evicted: evicted,
	}
	if pk, err := wgtypes.ParseKey(h.Record.PublicKey); err == nil && pk != (wgtypes.Key{}) {
		r.RevokedKey = peer.RevokedKey(pk)
	}
	return r
}
