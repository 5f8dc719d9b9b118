package peer

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keyCodec encodes whatever a bucket key names: base64 URL encoding with
// padding, the format ikto 0.3.0 agents write and read (docs/contract.md §4).
var keyCodec = base64.URLEncoding

// EncodePrefix is the key part that names prefix: the codec applied to its
// canonical CIDR text. peers.* and hb.* keys both end in it.
func EncodePrefix(prefix netip.Prefix) string {
	return keyCodec.EncodeToString([]byte(prefix.Masked().String()))
}

// DecodePrefix is the inverse of EncodePrefix. It accepts any prefix the text
// names, canonical or not; deciding whether a record may hold it is Check's.
func DecodePrefix(enc string) (netip.Prefix, error) {
	raw, err := keyCodec.DecodeString(enc)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not padded base64url: %w", enc, err)
	}
	p, err := netip.ParsePrefix(string(raw))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q does not encode a prefix: %w", enc, err)
	}
	return p, nil
}

// Key is the bucket key of the record that claims prefix:
// peers.<base64url(canonical CIDR text), padded>.
func Key(prefix netip.Prefix) string { return PeersPrefix + EncodePrefix(prefix) }

// ParseKey returns the prefix a peers.* key names (masked).
func ParseKey(key string) (netip.Prefix, error) {
	enc, ok := strings.CutPrefix(key, PeersPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a peer record key", key)
	}
	p, err := DecodePrefix(enc)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("key %s: %w", key, err)
	}
	return p.Masked(), nil
}

// RevokedKey is the bucket key that revokes a public key:
// revoked.<base64url(32 raw key bytes), padded>.
func RevokedKey(k wgtypes.Key) string {
	return RevokedPrefix + keyCodec.EncodeToString(k[:])
}

// ParseRevokedKey returns the public key a revoked.* bucket key names.
func ParseRevokedKey(key string) (wgtypes.Key, error) {
	enc, ok := strings.CutPrefix(key, RevokedPrefix)
	if !ok {
		return wgtypes.Key{}, fmt.Errorf("%q is not a revocation key", key)
	}
	raw, err := keyCodec.DecodeString(enc)
	if err != nil || len(raw) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("%q does not encode a 32-byte public key", key)
	}
	return wgtypes.NewKey(raw)
}
