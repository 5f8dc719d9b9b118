// Package peer is the bucket's wire format (docs/contract.md §4): the peer record, its key
// encoding, the revocation record, and the acceptance rules that decide which
// records an agent may apply to its device. A record that breaks a rule is
// rejected with a Reason and never applied.
package peer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Key prefixes in the bucket.
const (
	PeersPrefix   = "peers."
	RevokedPrefix = "revoked."
)

// Record is a host's claim: the value of its peers.<prefix> key. The JSON names
// are shared with ikto 0.3.0; readers ignore fields they do not know.
type Record struct {
	Name             string `json:"name"`
	PublicKey        string `json:"public_key"`
	AdvertiseAddress string `json:"advertise_address"`
	AllowedIP        string `json:"allowed_ip"`
	WGPort           int    `json:"wg_port"`
	// Seq orders the statements of one public key: the accepted record of
	// a key is its validly signed record with the highest Seq (§5). Zero
	// in an unsigned record (ikto 0.3.0's).
	Seq uint64 `json:"seq,omitempty"`
	// Sig is the XEdDSA signature of the record's statement by the key it
	// names (Rules.SignRecord), standard base64.
	Sig string `json:"sig,omitempty"`
	// Handover, in the first record of a new key, is the old key's
	// statement that the new key takes over its prefix (a key rotation):
	// the old key is retired for good.
	Handover Handover `json:"handover,omitzero"`
}

// Handover is a key rotation: From, the old public key, signs (Sig, XEdDSA)
// the statement that the record's public key succeeds it at the record's
// prefix.
type Handover struct {
	From string `json:"from"`
	Sig  string `json:"sig"`
}

// Revocation is the value of a revoked.<key> entry.
type Revocation struct {
	PublicKey string    `json:"public_key"`
	AllowedIP string    `json:"allowed_ip"`
	Name      string    `json:"name"`
	RevokedAt time.Time `json:"revoked_at"`
	// Signer and Sig: the operator key that signed it, and its Ed25519
	// signature, when the mesh trusts operator keys.
	Signer string `json:"signer,omitempty"`
	Sig    string `json:"sig,omitempty"`
}

// Signed reports whether r carries a signature (valid or not).
func (r Record) Signed() bool { return r.Sig != "" }

// Encode is the JSON value stored for r.
func (r Record) Encode() []byte {
	b, _ := json.Marshal(r) // a struct of strings and ints always marshals
	return b
}

// DecodeRecord reads a stored value as a record: the one decoder of record
// values. It checks only that the value is a JSON object of at most
// MaxValueSize bytes; whether the record counts is Rules.Check's to say.
func DecodeRecord(value []byte) (Record, error) {
	var r Record
	if len(value) > MaxValueSize {
		return r, fmt.Errorf("value is %d bytes, limit %d", len(value), MaxValueSize)
	}
	if err := json.Unmarshal(value, &r); err != nil || !bytes.HasPrefix(bytes.TrimSpace(value), []byte("{")) {
		return Record{}, errors.New("value is not a JSON peer record")
	}
	return r, nil
}

// DecodeRevocation reads a stored revoked.<key> value: the one decoder of
// revocations. Whether it counts is Rules.RevocationCounts's to say; the
// bucket key alone revokes where no operator key is trusted.
func DecodeRevocation(value []byte) (Revocation, error) {
	var r Revocation
	if len(value) > MaxValueSize {
		return r, fmt.Errorf("value is %d bytes, limit %d", len(value), MaxValueSize)
	}
	if err := json.Unmarshal(value, &r); err != nil {
		return Revocation{}, errors.New("value is not a JSON revocation")
	}
	return r, nil
}

// Prefix parses AllowedIP. It does not check acceptance; use Accept.
func (r Record) Prefix() (netip.Prefix, error) { return netip.ParsePrefix(r.AllowedIP) }

// Endpoint is advertise_address:wg_port.
func (r Record) Endpoint() netip.AddrPort {
	a, _ := netip.ParseAddr(r.AdvertiseAddress)
	return netip.AddrPortFrom(a.Unmap(), uint16(r.WGPort))
}
