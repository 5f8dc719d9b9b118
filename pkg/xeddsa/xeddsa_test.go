package xeddsa

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"

	"filippo.io/edwards25519"
)

// The curve's constants, for checks made with math/big instead of the field
// arithmetic under test.
var (
	fieldP     = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	groupQ, _  = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	montgomery = big.NewInt(486662)
)

func littleEndianInt(b []byte) *big.Int {
	bigEndian := slices.Clone(b)
	slices.Reverse(bigEndian)
	return new(big.Int).SetBytes(bigEndian)
}

func intLittleEndian(x *big.Int) [32]byte {
	var b [32]byte
	x.FillBytes(b[:])
	slices.Reverse(b[:])
	return b
}

func randomKey(t testing.TB) (private, public [32]byte) {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate X25519 key: %v", err)
	}
	return [32]byte(key.Bytes()), [32]byte(key.PublicKey().Bytes())
}

// negated reports whether the clamped key's Edwards point has sign bit 1, so
// that signing must use the negated scalar.
func negated(t testing.TB, private [32]byte) bool {
	t.Helper()
	a, err := edwards25519.NewScalar().SetBytesWithClamping(private[:])
	if err != nil {
		t.Fatalf("clamp: %v", err)
	}
	return new(edwards25519.Point).ScalarBaseMult(a).Bytes()[31]&0x80 != 0
}

func TestSignVerifiesUnderBothKeys(t *testing.T) {
	var signBits [2]int
	for range 200 {
		private, public := randomKey(t)
		message := make([]byte, private[1]) // 0 to 255 bytes
		rand.Read(message)

		sig, err := Sign(private, message)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if !Verify(public, message, sig) {
			t.Fatalf("Verify rejects a signature by %x", public)
		}
		edPublic, err := EdwardsPublicKey(public)
		if err != nil {
			t.Fatalf("EdwardsPublicKey(%x): %v", public, err)
		}
		if !ed25519.Verify(edPublic, message, sig[:]) {
			t.Fatalf("crypto/ed25519 rejects a signature by %x", public)
		}
		if negated(t, private) {
			signBits[1]++
		} else {
			signBits[0]++
		}
	}
	if signBits[0] == 0 || signBits[1] == 0 {
		t.Errorf("keys by Edwards sign bit %v; both paths must be exercised", signBits)
	}
}

// TestEdwardsPublicKeyMatchesX25519 checks the conversion three ways: the
// birational map back, u = (1+y)/(1-y), computed with math/big; the library's
// own Montgomery encoding of the point; and the point aB computed from the
// private key, up to sign.
func TestEdwardsPublicKeyMatchesX25519(t *testing.T) {
	one := big.NewInt(1)
	for range 100 {
		private, public := randomKey(t)
		edPublic, err := EdwardsPublicKey(public)
		if err != nil {
			t.Fatalf("EdwardsPublicKey(%x): %v", public, err)
		}
		if edPublic[31]&0x80 != 0 {
			t.Fatalf("EdwardsPublicKey(%x) = %x has sign bit 1", public, edPublic)
		}

		y := littleEndianInt(edPublic)
		u := new(big.Int).Add(one, y)
		u.Mul(u, new(big.Int).ModInverse(new(big.Int).Sub(one, y), fieldP))
		u.Mod(u, fieldP)
		if got := intLittleEndian(u); got != public {
			t.Fatalf("(1+y)/(1-y) for %x\n got %x\nwant %x", public, got, public)
		}

		point, err := new(edwards25519.Point).SetBytes(edPublic)
		if err != nil {
			t.Fatalf("decode %x: %v", edPublic, err)
		}
		if got := point.BytesMontgomery(); !bytes.Equal(got, public[:]) {
			t.Fatalf("BytesMontgomery for %x\n got %x", public, got)
		}

		a, _ := edwards25519.NewScalar().SetBytesWithClamping(private[:])
		want := new(edwards25519.Point).ScalarBaseMult(a).Bytes()
		want[31] &= 0x7f
		if !bytes.Equal(edPublic, want) {
			t.Fatalf("EdwardsPublicKey(%x)\n got %x\nwant %x (aB, sign cleared)", public, edPublic, want)
		}
	}
}

// TestEdwardsPublicKeyOnCurve checks the on-curve rule against Euler's
// criterion: u is on Curve25519 exactly when u^3 + 486662u^2 + u is a square.
func TestEdwardsPublicKeyOnCurve(t *testing.T) {
	var onCurve, twist int
	for i := range 400 {
		var u [32]byte
		if i < 100 {
			u[0] = byte(i + 2) // small u; 0 and 1 are of small order
		} else {
			rand.Read(u[:])
			u[31] &= 0x7f
			if littleEndianInt(u[:]).Cmp(fieldP) >= 0 {
				continue
			}
		}
		x := littleEndianInt(u[:])
		rhs := new(big.Int).Mul(x, x)
		rhs.Add(rhs, new(big.Int).Mul(montgomery, x))
		rhs.Add(rhs, big.NewInt(1))
		rhs.Mul(rhs, x)
		rhs.Mod(rhs, fieldP)
		square := big.Jacobi(rhs, fieldP) == 1

		_, err := EdwardsPublicKey(u)
		switch {
		case square && err != nil:
			t.Errorf("EdwardsPublicKey(%x) = %v, but u is on the curve", u, err)
		case !square && !errors.Is(err, errNotOnCurve):
			t.Errorf("EdwardsPublicKey(%x) = %v, want %v", u, err, errNotOnCurve)
		case square:
			onCurve++
		default:
			twist++
		}
	}
	if onCurve == 0 || twist == 0 {
		t.Errorf("%d keys on the curve, %d on the twist; both must be exercised", onCurve, twist)
	}
}

func TestEdwardsPublicKeyRejects(t *testing.T) {
	_, valid := randomKey(t)
	withTopBit := valid
	withTopBit[31] |= 0x80
	p := fieldP
	plus := func(x *big.Int, n int64) *big.Int { return new(big.Int).Add(x, big.NewInt(n)) }
	twoTo255 := new(big.Int).Lsh(big.NewInt(1), 255)

	tests := []struct {
		name     string
		u        [32]byte
		want     error
		lowOrder bool // X25519 with any key gives zero, crypto/ecdh refuses it
	}{
		{name: "u = p", u: intLittleEndian(p), want: errNonCanonical},
		{name: "u = p+1", u: intLittleEndian(plus(p, 1)), want: errNonCanonical},
		{name: "u = 2^255-1", u: intLittleEndian(plus(twoTo255, -1)), want: errNonCanonical},
		{name: "valid u with the top bit set", u: withTopBit, want: errNonCanonical},
		{name: "u = 0, order 2", u: [32]byte{}, want: errLowOrder, lowOrder: true},
		{name: "u = 1, order 4", u: [32]byte{1}, want: errLowOrder, lowOrder: true},
		{name: "u = -1", u: intLittleEndian(plus(p, -1)), want: errLowOrder, lowOrder: true},
		{
			name:     "order 8",
			u:        array32(t, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
			want:     errLowOrder,
			lowOrder: true,
		},
		{
			name:     "order 8, other point",
			u:        array32(t, "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
			want:     errLowOrder,
			lowOrder: true,
		},
	}
	private, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate X25519 key: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := EdwardsPublicKey(tt.u); !errors.Is(err, tt.want) {
				t.Errorf("EdwardsPublicKey(%x) = %x, %v; want %v", tt.u, got, err, tt.want)
			}
			if tt.lowOrder {
				peer, err := ecdh.X25519().NewPublicKey(tt.u[:])
				if err != nil {
					t.Fatalf("X25519 public key: %v", err)
				}
				if _, err := private.ECDH(peer); err == nil {
					t.Errorf("X25519 accepts %x, so it is not of small order", tt.u)
				}
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	private, public := randomKey(t)
	_, otherPublic := randomKey(t)
	message := []byte("ikto record, version 1")
	sig, err := Sign(private, message)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !Verify(public, message, sig) {
		t.Fatal("Verify rejects the unaltered signature")
	}

	// s + q is the same scalar, encoded out of range: the specification's
	// bound (2^253) lets it through, crypto/ed25519's does not.
	sPlusQ := sig
	s := intLittleEndian(new(big.Int).Add(littleEndianInt(sig[32:]), groupQ))
	copy(sPlusQ[32:], s[:])
	topBit := sig
	topBit[63] |= 0x80
	nonCanonicalU := public
	nonCanonicalU[31] |= 0x80

	type verification struct {
		name    string
		public  [32]byte
		message []byte
		sig     [64]byte
	}
	tests := []verification{
		{name: "altered message", public: public, message: []byte("ikto record, version 2"), sig: sig},
		{name: "empty message", public: public, message: nil, sig: sig},
		{name: "other key", public: otherPublic, message: message, sig: sig},
		{name: "s + q", public: public, message: message, sig: sPlusQ},
		{name: "s with libsignal's sign bit", public: public, message: message, sig: topBit},
		{name: "u with its top bit set", public: nonCanonicalU, message: message, sig: sig},
	}
	for i := range sig {
		altered := sig
		altered[i] ^= 0x01
		part := "R"
		if i >= 32 {
			part = "s"
		}
		name := fmt.Sprintf("%s byte %d flipped", part, i%32)
		tests = append(tests, verification{name: name, public: public, message: message, sig: altered})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if Verify(tt.public, tt.message, tt.sig) {
				t.Error("Verify accepts it")
			}
		})
	}
}

func TestSignIsRandomized(t *testing.T) {
	private, public := randomKey(t)
	message := []byte("same statement")
	first, err := Sign(private, message)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	second, err := Sign(private, message)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if first == second {
		t.Error("two signatures of one message are equal; Z is not random")
	}
	if !Verify(public, message, first) || !Verify(public, message, second) {
		t.Error("Verify rejects one of the two signatures")
	}

	var z, otherZ [64]byte
	otherZ[0] = 1
	fixed, _ := sign(private, message, z)
	again, _ := sign(private, message, z)
	other, _ := sign(private, message, otherZ)
	if fixed != again {
		t.Error("sign with one Z gives two signatures")
	}
	if fixed == other {
		t.Error("sign ignores Z")
	}
}

// TestSignClampsAsX25519 signs with a key whose bits clamping clears and sets
// differ from the clamped key's: the signature must be the clamped key's, and
// must verify under the public key crypto/ecdh derives from the raw bytes.
func TestSignClampsAsX25519(t *testing.T) {
	clamped, public := randomKey(t)
	clamped[0] &= 0xf8
	clamped[31] = clamped[31]&0x7f | 0x40
	raw := clamped
	raw[0] |= 0x07
	raw[31] = raw[31]&^0x40 | 0x80

	if got := x25519Public(t, raw); got != public {
		t.Fatalf("crypto/ecdh public key of the raw bytes\n got %x\nwant %x", got, public)
	}
	message := []byte("clamped")
	var z [64]byte
	fromRaw, err := sign(raw, message, z)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	fromClamped, err := sign(clamped, message, z)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if fromRaw != fromClamped {
		t.Error("sign does not clamp the private key")
	}
	if !Verify(public, message, fromRaw) {
		t.Error("Verify rejects a signature by the unclamped key")
	}
}

// A record is about 200 bytes; the figure that matters is Verify's, paid for
// every record read.
var benchmarkMessage = bytes.Repeat([]byte("ikto"), 50)

func BenchmarkSign(b *testing.B) {
	private, _ := randomKey(b)
	for b.Loop() {
		if _, err := Sign(private, benchmarkMessage); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	private, public := randomKey(b)
	sig, err := Sign(private, benchmarkMessage)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !Verify(public, benchmarkMessage, sig) {
			b.Fatal("Verify rejects a valid signature")
		}
	}
}
