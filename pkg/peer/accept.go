package peer

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Reason says why a record was rejected. The values are stable: they are metric
// label values and appear in logs.
type Reason string

// Rejection reasons, one per acceptance rule of docs/contract.md §4.
const (
	ReasonTooLarge     Reason = "too_large"            // value larger than MaxValueSize
	ReasonMalformed    Reason = "malformed"            // not a JSON object of the record's shape
	ReasonBadPrefix    Reason = "bad_prefix"           // allowed_ip is not a canonical CIDR prefix
	ReasonKeyMismatch  Reason = "key_mismatch"         // bucket key is not the encoding of allowed_ip
	ReasonOutsideMesh  Reason = "outside_mesh"         // allowed_ip not inside mesh_cidr (includes ::/0)
	ReasonWrongLength  Reason = "wrong_length"         // allowed_ip is not exactly subnet_prefix bits
	ReasonBadPublicKey Reason = "bad_public_key"       // not a base64 32-byte key, or all zeros
	ReasonRevoked      Reason = "revoked"              // public key has a revoked.* record
	ReasonDuplicateKey Reason = "duplicate_public_key" // key already used by an older accepted record
	ReasonOwnKey       Reason = "own_public_key"       // this host's key under a prefix it does not hold
	ReasonBadEndpoint  Reason = "bad_endpoint"         // advertise_address not a usable unicast IP
	ReasonBadPort      Reason = "bad_port"             // wg_port not 1-65535
	ReasonBadSignature Reason = "bad_signature"        // sig is not the named key's signature of the record
	ReasonUnsigned     Reason = "unsigned"             // no sig, where signatures are required or the key signs
	ReasonSuperseded   Reason = "superseded"           // the key has signed a record with a higher seq
	ReasonPrefixTaken  Reason = "prefix_taken"         // another key's accepted record holds the prefix
)

// Reasons lists every Reason, for metrics that want a zero for each.
var Reasons = []Reason{
	ReasonTooLarge, ReasonMalformed, ReasonBadPrefix, ReasonKeyMismatch, ReasonOutsideMesh,
	ReasonWrongLength, ReasonBadPublicKey, ReasonRevoked, ReasonDuplicateKey, ReasonOwnKey,
	ReasonBadEndpoint, ReasonBadPort, ReasonBadSignature, ReasonUnsigned, ReasonSuperseded, ReasonPrefixTaken,
}

// MaxValueSize bounds a record's JSON. Real records are ~200 bytes; anything
// near this is garbage or an attack and is not parsed.
const MaxValueSize = 4096

// Rejection is a record that may not be applied, and why.
type Rejection struct {
	Key      string
	Revision uint64
	Reason   Reason
	Detail   string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("record %s (revision %d) rejected: %s: %s", r.Key, r.Revision, r.Reason, r.Detail)
}

// Accepted is a record that passed the per-record rules, in parsed form.
type Accepted struct {
	Record
	Key       string // bucket key
	Revision  uint64
	Prefix    netip.Prefix
	PublicKey wgtypes.Key
	Endpoint  netip.AddrPort
	// Retires is the key a valid handover retires (zero: none).
	Retires wgtypes.Key
}

// Rules are the mesh-wide parameters every record is checked against.
type Rules struct {
	Mesh netip.Prefix // mesh_cidr
	Bits int          // subnet_prefix
	// Bucket is the bucket's name: with Mesh and Bits it binds every
	// signed statement to this mesh.
	Bucket string
	// Operators are the operator keys whose signed commands count
	// (operator_keys). Without any, a plain delete marker or revocation is
	// a command, as in ikto 0.3.0.
	Operators []ed25519.PublicKey
	// Require refuses unsigned records (membership_signatures: require).
	Require bool
}

// Check applies the rules that need only the record itself, its signature
// included. The set rules (revoked, superseded, duplicate and own key, a
// prefix taken) are Table's.
func (ru Rules) Check(key string, value []byte, rev uint64) (Accepted, *Rejection) {
	return ru.check(key, value, rev, nil)
}

// check is Check with a record known to carry a valid signature (one the
// table accepted before, byte for byte), whose signature need not be
// verified again.
func (ru Rules) check(key string, value []byte, rev uint64, known func(Record) bool) (Accepted, *Rejection) {
	reject := func(reason Reason, format string, args ...any) (Accepted, *Rejection) {
		return Accepted{}, &Rejection{Key: key, Revision: rev, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if len(value) > MaxValueSize {
		return reject(ReasonTooLarge, "value is %d bytes, limit %d", len(value), MaxValueSize)
	}
	r, err := DecodeRecord(value)
	if err != nil {
		return reject(ReasonMalformed, "%v", err)
	}
	p, err := netip.ParsePrefix(r.AllowedIP)
	if err != nil || p.Addr().Zone() != "" {
		return reject(ReasonBadPrefix, "allowed_ip %q is not a CIDR prefix", r.AllowedIP)
	}
	if p.Masked() != p || p.String() != r.AllowedIP || p.Addr().Is4In6() {
		return reject(ReasonBadPrefix, "allowed_ip %q is not canonical (want %s)", r.AllowedIP, p.Masked())
	}
	if want := Key(p); key != want {
		return reject(ReasonKeyMismatch, "key does not encode allowed_ip %s (want %s)", p, want)
	}
	if p.Addr().BitLen() != ru.Mesh.Addr().BitLen() || p.Bits() < ru.Mesh.Bits() || !ru.Mesh.Contains(p.Addr()) {
		return reject(ReasonOutsideMesh, "allowed_ip %s is outside mesh %s", p, ru.Mesh)
	}
	if p.Bits() != ru.Bits {
		return reject(ReasonWrongLength, "allowed_ip %s is not a /%d", p, ru.Bits)
	}
	pk, err := wgtypes.ParseKey(r.PublicKey)
	if err != nil {
		return reject(ReasonBadPublicKey, "public_key %q is not a base64 WireGuard key", r.PublicKey)
	}
	if pk == (wgtypes.Key{}) {
		return reject(ReasonBadPublicKey, "public_key is all zeros")
	}
	adv, err := netip.ParseAddr(r.AdvertiseAddress)
	if err != nil || adv.Zone() != "" || !UsableUnicast(adv) {
		return reject(ReasonBadEndpoint, "advertise_address %q is not a usable unicast IP", r.AdvertiseAddress)
	}
	// An endpoint inside the mesh would be reached through the device itself:
	// WireGuard would wrap its own packets in a loop.
	if ru.Mesh.Contains(adv.Unmap()) {
		return reject(ReasonBadEndpoint, "advertise_address %s is inside mesh %s; it must be an underlay address", adv, ru.Mesh)
	}
	if r.WGPort < 1 || r.WGPort > 65535 {
		return reject(ReasonBadPort, "wg_port %d is not 1-65535", r.WGPort)
	}
	switch {
	case !r.Signed() && ru.Require:
		return reject(ReasonUnsigned, "the record is not signed, and membership_signatures is require (an ikto 0.3.0 agent's record)")
	case !r.Signed():
	case known != nil && known(r):
	case !ru.verifyRecord(r, pk):
		return reject(ReasonBadSignature, "sig is not %s's signature of this record in mesh %s of bucket %s", r.PublicKey, ru.Mesh, ru.Bucket)
	}
	var retired wgtypes.Key
	if r.Handover != (Handover{}) {
		from, ok := ru.verifyHandover(r)
		if !ok || !r.Signed() {
			return reject(ReasonBadSignature, "handover.sig is not %s's signature handing %s over to %s", r.Handover.From, r.AllowedIP, r.PublicKey)
		}
		retired = from
	}
	return Accepted{
		Record: r, Key: key, Revision: rev, Prefix: p, PublicKey: pk,
		Endpoint: netip.AddrPortFrom(adv.Unmap(), uint16(r.WGPort)), Retires: retired,
	}, nil
}

// thisNetwork is 0.0.0.0/8 (RFC 1122 "this host on this network"): a source
// address only, never a destination.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// UsableUnicast reports whether other hosts could send WireGuard packets to a:
// not unspecified, loopback, multicast, the IPv4 broadcast address or 0.0.0.0/8,
// and not IPv6 link-local, which needs a zone that a record cannot carry.
func UsableUnicast(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		!a.IsInterfaceLocalMulticast() && !a.IsLinkLocalMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && !thisNetwork.Contains(a) &&
		!(a.Is6() && a.IsLinkLocalUnicast())
}
