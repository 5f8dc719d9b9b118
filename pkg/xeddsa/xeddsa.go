// Package xeddsa signs with an X25519 (WireGuard) private key and verifies
// with the X25519 public key, as Signal's XEdDSA specification describes
// (revision 1, 2016-10-20, https://signal.org/docs/specifications/xeddsa/).
// XEdDSA maps the Montgomery key pair onto Ed25519: the signer negates its
// scalar when needed so that its Edwards public key has sign bit 0, and a
// verifier recovers that Edwards key from the Montgomery u coordinate alone.
// The signatures are Ed25519 signatures under that key, so verification here
// is crypto/ed25519's. ikto uses it so that a record is signed by the
// WireGuard key it names: holding the key the record announces is the proof,
// with no second key pair to distribute or certificate to bind the two.
package xeddsa

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

var (
	errNonCanonical = errors.New("xeddsa: public key u is not below 2^255-19")
	errNotOnCurve   = errors.New("xeddsa: public key u is not on curve25519 (it is on the twist)")
	errLowOrder     = errors.New("xeddsa: public key is a point of small order")
)

// hash1Prefix is the specification's hash_1 domain separator, 2^256-2 as 32
// little-endian bytes; it keeps the nonce hash apart from the challenge hash,
// whose input starts with an encoded point and so can never begin this way.
var hash1Prefix = func() (p [32]byte) {
	for i := range p {
		p[i] = 0xff
	}
	p[0] = 0xfe
	return p
}()

// Sign signs message with an X25519 private key, clamped as X25519 clamps it.
// The 64 random bytes the specification calls Z come from crypto/rand, so two
// signatures of one message differ, and both verify.
func Sign(private [32]byte, message []byte) ([64]byte, error) {
	var z [64]byte
	if _, err := rand.Read(z[:]); err != nil {
		return [64]byte{}, fmt.Errorf("xeddsa: read random Z: %w", err)
	}
	return sign(private, message, z)
}

// sign is the specification's xeddsa_sign with Z given, so tests can pin it.
func sign(private [32]byte, message []byte, z [64]byte) ([64]byte, error) {
	a, err := edwards25519.NewScalar().SetBytesWithClamping(private[:])
	if err != nil {
		return [64]byte{}, fmt.Errorf("xeddsa: private key: %w", err)
	}

	// calculate_key_pair: a verifier only knows u, which names both aB and
	// -aB, and takes the one with sign bit 0. When aB's sign bit is 1 the
	// signer uses -a, whose point is -aB. The bit is chosen without a branch
	// because it is one bit of the private key's point.
	public := new(edwards25519.Point).ScalarBaseMult(a).Bytes()
	negative := int(public[31] >> 7)
	public[31] &= 0x7f
	aBytes := a.Bytes()
	subtle.ConstantTimeCopy(negative, aBytes, edwards25519.NewScalar().Negate(a).Bytes())
	if _, err := a.SetCanonicalBytes(aBytes); err != nil {
		return [64]byte{}, fmt.Errorf("xeddsa: negate private scalar: %w", err)
	}

	// The nonce hashes a reduced modulo q, as the specification defines a.
	// libsignal's C signer hashes the unreduced clamped key when it does not
	// negate, so its nonces differ for those keys; signatures verify either way.
	r, err := hashToScalar(hash1Prefix[:], aBytes, message, z[:])
	if err != nil {
		return [64]byte{}, err
	}
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h, err := hashToScalar(R, public, message)
	if err != nil {
		return [64]byte{}, err
	}
	s := edwards25519.NewScalar().MultiplyAdd(h, a, r)

	var sig [64]byte
	copy(sig[:32], R)
	copy(sig[32:], s.Bytes())
	return sig, nil
}

// hashToScalar is SHA-512 over the parts in order, reduced modulo q.
func hashToScalar(parts ...[]byte) (*edwards25519.Scalar, error) {
	digest := sha512.New()
	for _, part := range parts {
		digest.Write(part)
	}
	s, err := edwards25519.NewScalar().SetUniformBytes(digest.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("xeddsa: reduce hash: %w", err)
	}
	return s, nil
}

// Verify reports whether sig is an XEdDSA signature of message by the holder
// of the X25519 public key. It is the specification's xeddsa_verify run as
// crypto/ed25519's Verify under EdwardsPublicKey(public), which is stricter
// than the specification in two ways: s must be below q (the specification
// allows up to 2^253), so a signature cannot be altered into a second valid
// one, and keys of small order, for which anyone can sign, are refused.
//
// libsignal's own signer stores the Edwards sign bit in the top bit of s
// instead of negating the scalar; its signatures verify here only when that
// bit is 0.
func Verify(public [32]byte, message []byte, sig [64]byte) bool {
	edPublic, err := EdwardsPublicKey(public)
	if err != nil {
		return false
	}
	return ed25519.Verify(edPublic, message, sig[:])
}

// EdwardsPublicKey returns the Ed25519 public key an XEdDSA verifier uses for
// an X25519 public key u: the point with y = (u-1)/(u+1) and sign bit 0. It
// refuses u that is not a canonical field element, u on the twist (no point
// of Curve25519 has it), and points of small order, for which a signature can
// be forged without the private key. u = -1 needs no rule of its own: the
// specification's inv(0) = 0 maps it to y = 0, a point of order 4.
func EdwardsPublicKey(public [32]byte) (ed25519.PublicKey, error) {
	u, err := new(field.Element).SetBytes(public[:])
	if err != nil {
		return nil, fmt.Errorf("xeddsa: public key: %w", err)
	}
	// SetBytes ignores the top bit and reduces modulo p; a u that does not
	// round-trip was at least p.
	if !bytes.Equal(u.Bytes(), public[:]) {
		return nil, errNonCanonical
	}

	one := new(field.Element).One()
	numerator := new(field.Element).Subtract(u, one)
	denominator := new(field.Element).Add(u, one)
	y := new(field.Element).Multiply(numerator, denominator.Invert(denominator))

	// y's canonical encoding has the top bit, the sign of x, clear.
	point, err := new(edwards25519.Point).SetBytes(y.Bytes())
	if err != nil {
		return nil, errNotOnCurve
	}
	if new(edwards25519.Point).MultByCofactor(point).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, errLowOrder
	}
	return ed25519.PublicKey(point.Bytes()), nil
}
