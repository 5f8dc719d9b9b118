package xeddsa

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

func decodeHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return b
}

func array32(t *testing.T, s string) [32]byte {
	t.Helper()
	return [32]byte(decodeHex(t, s))
}

func array64(t *testing.T, s string) [64]byte {
	t.Helper()
	return [64]byte(decodeHex(t, s))
}

// TestLibsignalSignVector is xeddsa_fast_test from libsignal-protocol-c,
// src/curve25519/ed25519/tests/internal_fast_tests.c: the private key is zero
// but for byte 8 = 189, clamped; the message is 200 zero bytes; Z is 64 zero
// bytes. This key's Edwards point has sign bit 1, so the vector covers the
// negation. (libsignal hashes the unreduced clamped key into the nonce where
// the specification hashes k mod q; the two agree only when the scalar is
// negated, as here, so libsignal's sign-bit-0 vectors do not apply.)
func TestLibsignalSignVector(t *testing.T) {
	var private [32]byte
	private[8] = 189
	private[31] = 0x40 // clamping as the C test applies it; sign clamps again
	message := make([]byte, 200)
	want := array64(t, "11c7f3e6c4df9e8a5150e1db3b30f92de3a3b3aa438656545fa7390f4bcc7bb2"+
		"6c431d9e90643e4f0eaa0e9c557766fa69ada576d63dcaf2ac326c11d0b97702")

	got, err := sign(private, message, [64]byte{})
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if got != want {
		t.Fatalf("signature\n got %x\nwant %x", got, want)
	}

	public := x25519Public(t, private)
	if !Verify(public, message, got) {
		t.Error("Verify rejects the vector")
	}
	got[0] ^= 1
	if Verify(public, message, got) {
		t.Error("Verify accepts the vector with R altered")
	}
	// The same test's "verify #3": a public key of 0xff bytes is not a field
	// element.
	if Verify([32]byte(bytes.Repeat([]byte{0xff}, 32)), message, want) {
		t.Error("Verify accepts u = 2^256-1")
	}
}

// TestLibsignalRustVector is test_signature from libsignal,
// rust/core/src/curve/curve25519.rs (also in libsignal-protocol-java's
// Curve25519Test). libsignal's signer keeps the Edwards sign bit in the top
// bit of s instead of negating the scalar, and this signature has that bit
// set, so it is not a valid XEdDSA signature as published. Moving the bit
// back into the Edwards key makes it an Ed25519 signature under the point
// EdwardsPublicKey derives, which checks the conversion against a signature
// made elsewhere.
func TestLibsignalRustVector(t *testing.T) {
	private := array32(t, "c097248412e58bf05df487968205132794178e367637f5818f81e0e6ce73e865")
	public := array32(t, "ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64")
	message := decodeHex(t, "05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a")
	sig := array64(t, "5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfb"+
		"ede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88")

	if got := x25519Public(t, private); got != public {
		t.Fatalf("X25519 public key of the vector's private key\n got %x\nwant %x", got, public)
	}
	if Verify(public, message, sig) {
		t.Error("Verify accepts a signature whose s has its top bit set")
	}

	edPublic, err := EdwardsPublicKey(public)
	if err != nil {
		t.Fatalf("EdwardsPublicKey: %v", err)
	}
	signBit := sig[63] & 0x80
	withSign := bytes.Clone(edPublic)
	withSign[31] |= signBit
	sig[63] &^= 0x80
	if !ed25519.Verify(withSign, message, sig[:]) {
		t.Error("the vector does not verify under the converted key with libsignal's sign bit")
	}

	// A signature made here with the same key is a valid XEdDSA signature.
	ours, err := Sign(private, message)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !Verify(public, message, ours) {
		t.Error("Verify rejects a signature by the vector's key")
	}
}

// TestPinnedSignBitZeroVector pins the path without negation. No published
// vector follows the specification there (see TestLibsignalSignVector), so
// this one was produced by this package; it guards against changes, and is
// checked against crypto/ed25519 and crypto/ecdh, not against another
// implementation.
func TestPinnedSignBitZeroVector(t *testing.T) {
	private := array32(t, "0104030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
	public := array32(t, "cce80604486742ce1a9e4ba3125f80645fe35fd5baf422f9dc32514ca93b7a26")
	message := []byte("ikto xeddsa: sign bit 0")
	var z [64]byte
	for i := range z {
		z[i] = byte(0xa0 + i%16)
	}
	want := array64(t, "8157081d26841103e97335695e3a29f40c4faebc5d0ec2ada525821d947e6f0b"+
		"70fccdd5c765261f90e45064de51f060ac1593c437b8153b7c47ab4b9ec19e00")

	if got := x25519Public(t, private); got != public {
		t.Fatalf("X25519 public key\n got %x\nwant %x", got, public)
	}
	if negated(t, private) {
		t.Fatal("the pinned key's Edwards point has sign bit 1; the vector no longer covers sign bit 0")
	}
	got, err := sign(private, message, z)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if got != want {
		t.Fatalf("signature\n got %x\nwant %x", got, want)
	}
	edPublic, err := EdwardsPublicKey(public)
	if err != nil {
		t.Fatalf("EdwardsPublicKey: %v", err)
	}
	if !ed25519.Verify(edPublic, message, want[:]) {
		t.Error("crypto/ed25519 rejects the pinned signature")
	}
}

// x25519Public is the public key crypto/ecdh derives, which is what WireGuard
// publishes.
func x25519Public(t testing.TB, private [32]byte) [32]byte {
	t.Helper()
	key, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		t.Fatalf("X25519 private key: %v", err)
	}
	return [32]byte(key.PublicKey().Bytes())
}
