// Package ipam draws the prefix a host claims in the mesh: a uniformly random
// subnet of subnet_prefix bits inside mesh_cidr, aligned so its host bits are
// zero. Hosts pick at random rather than in order so that two hosts joining at
// once rarely race for the same prefix; the bucket's compare-and-set settles the
// races that remain.
package ipam

import (
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"net/netip"
)

// RandomPrefix returns a prefix of bits bits inside mesh, chosen uniformly among
// the 2^(bits-mesh.Bits()) subnets, with its host bits zero. It works for IPv4
// and IPv6 and for any gap up to 128 bits. rnd supplies the randomness;
// nil means crypto/rand. A short read from rnd is an error.
func RandomPrefix(mesh netip.Prefix, bits int, rnd io.Reader) (netip.Prefix, error) {
	if !mesh.IsValid() {
		return netip.Prefix{}, fmt.Errorf("mesh prefix %v is not valid", mesh)
	}
	if mesh.Masked() != mesh {
		return netip.Prefix{}, fmt.Errorf("mesh prefix %s has host bits set; use %s", mesh, mesh.Masked())
	}
	addrBits := mesh.Addr().BitLen()
	if bits <= mesh.Bits() || bits > addrBits {
		return netip.Prefix{}, fmt.Errorf("subnet prefix /%d must be longer than the mesh prefix %s and at most /%d", bits, mesh, addrBits)
	}
	if rnd == nil {
		rnd = rand.Reader
	}

	// Draw exactly the subnet bits: read whole bytes, then clear the excess top
	// bits. Masking off a power-of-two range keeps every value equally likely,
	// where reducing modulo a non-power of two would not.
	n := bits - mesh.Bits()
	buf := make([]byte, (n+7)/8)
	if _, err := io.ReadFull(rnd, buf); err != nil {
		return netip.Prefix{}, fmt.Errorf("read randomness: %w", err)
	}
	buf[0] &= byte(0xff >> (8*len(buf) - n))

	// Move the drawn bits to positions [mesh.Bits(), bits) and OR them into the
	// mesh address, whose bits there are zero because the mesh is masked.
	sub := new(big.Int).SetBytes(buf)
	sub.Lsh(sub, uint(addrBits-bits))
	addr := mesh.Addr().AsSlice()
	off := sub.FillBytes(make([]byte, len(addr)))
	for i := range addr {
		addr[i] |= off[i]
	}
	a, _ := netip.AddrFromSlice(addr) // same length as the mesh address
	return netip.PrefixFrom(a, bits), nil
}
