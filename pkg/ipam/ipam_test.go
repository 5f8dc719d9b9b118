package ipam

import (
	"bytes"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

// seeded is a deterministic randomness source, so a failing draw can be replayed.
func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// subnetIndex is the number of p among the subnets of its length in mesh: the
// bits between mesh.Bits() and p.Bits().
func subnetIndex(mesh, p netip.Prefix) *big.Int {
	x := new(big.Int).SetBytes(p.Addr().AsSlice())
	x.Rsh(x, uint(p.Addr().BitLen()-p.Bits()))
	n := p.Bits() - mesh.Bits()
	mask := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(n)), big.NewInt(1))
	return x.And(x, mask)
}

// checkDraw fails unless p is a well-formed subnet of mesh.
func checkDraw(t *testing.T, mesh netip.Prefix, bits int, p netip.Prefix) {
	t.Helper()
	if p.Bits() != bits {
		t.Fatalf("RandomPrefix(%s, %d) = %s: want /%d", mesh, bits, p, bits)
	}
	if p.Masked() != p {
		t.Fatalf("RandomPrefix(%s, %d) = %s: host bits set", mesh, bits, p)
	}
	if !mesh.Contains(p.Addr()) || p.Addr().Is4() != mesh.Addr().Is4() {
		t.Fatalf("RandomPrefix(%s, %d) = %s: outside the mesh", mesh, bits, p)
	}
}

func TestRandomPrefixAlignedAndContained(t *testing.T) {
	tests := []struct {
		mesh string
		bits int
	}{
		{"fd10::/16", 48},  // the default: a 32-bit gap
		{"fd10::/16", 17},  // subnet = mesh+1
		{"fd10::/16", 64},  // gap not a multiple of 8 from the top byte boundary
		{"fd10::/16", 128}, // 112-bit gap
		{"::/0", 48},       // whole address space is allowed by ipam
		{"::/0", 128},      // the widest gap: 128 bits
		{"fd00::/127", 128},
		{"fd10:abcd::/33", 41},
		{"100.64.0.0/10", 24},
		{"100.64.0.0/10", 11},
		{"10.0.0.0/8", 32},
		{"0.0.0.0/0", 32},
		{"192.168.1.0/31", 32},
		{"::ffff:100.64.0.0/106", 120}, // IPv4-mapped stays IPv6-shaped
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_to_%d", tt.mesh, tt.bits), func(t *testing.T) {
			mesh := netip.MustParsePrefix(tt.mesh)
			rnd := seeded(1)
			for range 2000 {
				p, err := RandomPrefix(mesh, tt.bits, rnd)
				if err != nil {
					t.Fatalf("RandomPrefix(%s, %d): %v", mesh, tt.bits, err)
				}
				checkDraw(t, mesh, tt.bits, p)
			}
		})
	}
}

// TestRandomPrefixBitPlacement pins where the drawn bits land: an all-ones
// source must give the last subnet and an all-zeros source the first.
func TestRandomPrefixBitPlacement(t *testing.T) {
	tests := []struct {
		mesh       string
		bits       int
		ones, zero string
	}{
		{"fd10::/16", 48, "fd10:ffff:ffff::/48", "fd10::/48"},
		{"fd10::/16", 17, "fd10:8000::/17", "fd10::/17"},
		{"fd00::/127", 128, "fd00::1/128", "fd00::/128"},
		{"::/0", 128, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/128"},
		{"100.64.0.0/10", 24, "100.127.255.0/24", "100.64.0.0/24"},
		{"0.0.0.0/0", 32, "255.255.255.255/32", "0.0.0.0/32"},
		{"10.0.0.0/8", 12, "10.240.0.0/12", "10.0.0.0/12"},
	}
	for _, tt := range tests {
		mesh := netip.MustParsePrefix(tt.mesh)
		for src, want := range map[byte]string{0xff: tt.ones, 0x00: tt.zero} {
			got, err := RandomPrefix(mesh, tt.bits, bytes.NewReader(bytes.Repeat([]byte{src}, 16)))
			if err != nil {
				t.Fatalf("RandomPrefix(%s, %d): %v", mesh, tt.bits, err)
			}
			if got.String() != want {
				t.Errorf("RandomPrefix(%s, %d) with %#02x bytes = %s, want %s", mesh, tt.bits, src, got, want)
			}
		}
	}
}

// TestRandomPrefixSpread fails if draws cluster: it buckets 10,000 draws on the
// top and on the bottom four subnet bits (a misplaced shift or mask shows up in
// one of them) and runs a chi-square test on each. The seed is fixed, so the
// test is deterministic; 37.7 is the 0.1% critical value for 15 degrees of
// freedom, so a correct implementation fails it for one seed in a thousand.
func TestRandomPrefixSpread(t *testing.T) {
	const draws, buckets, critical = 10000, 16, 37.7
	tests := []struct {
		mesh string
		bits int
	}{
		{"fd10::/16", 48},
		{"fd10::/16", 64},
		{"::/0", 128},
		{"100.64.0.0/10", 24},
		{"fd00::/124", 128}, // exactly 16 subnets: every one must turn up
	}
	for _, tt := range tests {
		mesh := netip.MustParsePrefix(tt.mesh)
		n := tt.bits - mesh.Bits()
		var top, bottom [buckets]int
		rnd := seeded(42)
		for range draws {
			p, err := RandomPrefix(mesh, tt.bits, rnd)
			if err != nil {
				t.Fatal(err)
			}
			idx := subnetIndex(mesh, p)
			bottom[new(big.Int).And(idx, big.NewInt(buckets-1)).Int64()]++
			top[new(big.Int).Rsh(idx, uint(n-4)).Int64()]++
		}
		for name, counts := range map[string][buckets]int{"top": top, "bottom": bottom} {
			if chi := chiSquare(counts[:], draws); chi > critical {
				t.Errorf("RandomPrefix(%s, %d): %s four subnet bits are not uniform: chi-square %.1f > %.1f; counts %v",
					mesh, tt.bits, name, chi, critical, counts)
			}
		}
	}
}

func chiSquare(counts []int, total int) float64 {
	want := float64(total) / float64(len(counts))
	var chi float64
	for _, c := range counts {
		d := float64(c) - want
		chi += d * d / want
	}
	return chi
}

// TestRandomPrefixDistinct: among 10,000 draws of 2^48 subnets a repeat has a
// chance of about 2e-7, so any repeat means the draw is not using its bits.
func TestRandomPrefixDistinct(t *testing.T) {
	mesh := netip.MustParsePrefix("fd10::/16")
	seen := map[netip.Prefix]bool{}
	rnd := seeded(7)
	for i := range 10000 {
		p, err := RandomPrefix(mesh, 64, rnd)
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("draw %d repeated %s", i, p)
		}
		seen[p] = true
	}
}

func TestRandomPrefixDeterministic(t *testing.T) {
	mesh := netip.MustParsePrefix("fd10::/16")
	draw := func(seed uint64) []netip.Prefix {
		rnd := seeded(seed)
		var out []netip.Prefix
		for range 10 {
			p, err := RandomPrefix(mesh, 48, rnd)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	a, b, c := draw(3), draw(3), draw(4)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, draw %d: %s then %s", i, a[i], b[i])
		}
	}
	if a[0] == c[0] && a[1] == c[1] {
		t.Fatalf("seeds 3 and 4 drew the same prefixes %s, %s", a[0], a[1])
	}
}

func TestRandomPrefixCryptoRandDefault(t *testing.T) {
	mesh := netip.MustParsePrefix("fd10::/16")
	a, err := RandomPrefix(mesh, 64, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RandomPrefix(mesh, 64, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkDraw(t, mesh, 64, a)
	if a == b {
		t.Fatalf("two crypto/rand draws of 48 bits were both %s", a)
	}
}

func TestRandomPrefixErrors(t *testing.T) {
	tests := []struct {
		name string
		mesh netip.Prefix
		bits int
		want string // words the error must contain
	}{
		{"same as mesh", netip.MustParsePrefix("fd10::/16"), 16, "longer than the mesh"},
		{"shorter than mesh", netip.MustParsePrefix("fd10::/16"), 8, "longer than the mesh"},
		{"negative", netip.MustParsePrefix("fd10::/16"), -1, "longer than the mesh"},
		{"past v6", netip.MustParsePrefix("fd10::/16"), 129, "at most /128"},
		{"past v4", netip.MustParsePrefix("100.64.0.0/10"), 33, "at most /32"},
		{"v4 /32 mesh", netip.MustParsePrefix("100.64.0.1/32"), 32, "longer than the mesh"},
		{"host bits", netip.MustParsePrefix("fd10::1/16"), 48, "use fd10::/16"},
		{"zero prefix", netip.Prefix{}, 48, "not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := RandomPrefix(tt.mesh, tt.bits, seeded(1))
			if err == nil {
				t.Fatalf("RandomPrefix(%s, %d) = %s, want error", tt.mesh, tt.bits, p)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RandomPrefix(%s, %d) error %q does not contain %q", tt.mesh, tt.bits, err, tt.want)
			}
		})
	}

	t.Run("short read", func(t *testing.T) {
		// 32 subnet bits need 4 bytes; 3 must not silently give a biased draw.
		_, err := RandomPrefix(netip.MustParsePrefix("fd10::/16"), 48, bytes.NewReader([]byte{1, 2, 3}))
		if err == nil || !strings.Contains(err.Error(), "randomness") {
			t.Fatalf("short read: err = %v, want a randomness error", err)
		}
	})
	t.Run("reader error", func(t *testing.T) {
		_, err := RandomPrefix(netip.MustParsePrefix("fd10::/16"), 48, iotest.ErrReader(iotest.ErrTimeout))
		if err == nil {
			t.Fatal("reader error: want an error")
		}
	})
}

func FuzzRandomPrefix(f *testing.F) {
	f.Add([]byte(netip.MustParseAddr("fd10::").AsSlice()), 16, 48, []byte("0123456789abcdef"))
	f.Add([]byte{100, 64, 0, 0}, 10, 24, []byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, addr []byte, meshBits, bits int, seed []byte) {
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		mesh := netip.PrefixFrom(a, meshBits)
		p, err := RandomPrefix(mesh, bits, bytes.NewReader(seed))
		valid := mesh.IsValid() && mesh.Masked() == mesh && bits > meshBits && bits <= a.BitLen()
		if !valid {
			if err == nil {
				t.Fatalf("RandomPrefix(%s, %d) = %s, want error", mesh, bits, p)
			}
			return
		}
		if err != nil {
			// Only a short seed may fail a valid request.
			if n := bits - meshBits; len(seed) >= (n+7)/8 {
				t.Fatalf("RandomPrefix(%s, %d) with %d random bytes: %v", mesh, bits, len(seed), err)
			}
			return
		}
		checkDraw(t, mesh, bits, p)
	})
}
