package harness

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
)

// underlayRange is the only range the harness takes underlay subnets from
// (RFC 2544 benchmarking space: never routed, never anyone's real network).
var underlayRange = netip.MustParsePrefix("198.18.0.0/15")

// subnetInUse reports whether any interface other than except has an address
// inside subnet, or any route overlaps it.
func subnetInUse(subnet netip.Prefix, except string) (bool, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return false, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Name == except {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue // the interface went away meanwhile
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Overlaps(subnet) {
				return true, nil
			}
		}
	}
	routes, err := ip("-4", "-o", "route", "show", "table", "all")
	if err != nil {
		return false, fmt.Errorf("list routes: %w", err)
	}
	for _, line := range strings.Split(routes, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		dst := fields[0]
		if dst == "local" || dst == "broadcast" || dst == "unicast" {
			if len(fields) < 2 {
				continue
			}
			dst = fields[1]
		}
		if strings.Contains(line, "dev "+except+" ") && except != "" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil && p.Bits() > 0 && p.Overlaps(subnet) {
			return true, nil
		}
	}
	return false, nil
}

func randomSubnet() (netip.Prefix, error) {
	idx, err := rand.Int(rand.Reader, big.NewInt(1<<(24-underlayRange.Bits())))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("random subnet: %w", err)
	}
	b := underlayRange.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(idx.Int64())<<8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24), nil
}

// pickMesh picks a random fdXX::/16 that no address on the machine is in.
func pickMesh() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list addresses: %w", err)
	}
	for range 50 {
		var b [1]byte
		if _, err := rand.Read(b[:]); err != nil {
			return netip.Prefix{}, fmt.Errorf("random mesh: %w", err)
		}
		if b[0] == 0 || b[0] == 0x10 { // fd00::/16 is common on test machines, fd10::/16 is ikto's default
			continue
		}
		var a [16]byte
		a[0], a[1] = 0xfd, b[0]
		mesh := netip.PrefixFrom(netip.AddrFrom16(a), 16)
		free := true
		for _, ad := range addrs {
			if p, err := netip.ParsePrefix(ad.String()); err == nil && mesh.Contains(p.Addr()) {
				free = false
			}
		}
		if free {
			return mesh, nil
		}
	}
	return netip.Prefix{}, errors.New("no free fdXX::/16 mesh prefix")
}

// randomPrefix returns a random, aligned prefix of bits inside mesh.
func randomPrefix(mesh netip.Prefix, bits int) (netip.Prefix, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return netip.Prefix{}, fmt.Errorf("random prefix: %w", err)
	}
	base := mesh.Masked().Addr().As16()
	var out [16]byte
	for i := range out {
		for bit := 7; bit >= 0; bit-- {
			pos := i*8 + (7 - bit)
			var v byte
			switch {
			case pos < mesh.Bits():
				v = base[i] >> bit & 1
			case pos < bits:
				v = r[i] >> bit & 1
			}
			out[i] |= v << bit
		}
	}
	return netip.PrefixFrom(netip.AddrFrom16(out), bits), nil
}

const suffixAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomSuffix() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random suffix: %w", err)
	}
	for i := range b {
		b[i] = suffixAlphabet[int(b[i])%len(suffixAlphabet)]
	}
	return string(b[:]), nil
}

// randomMAC is a random locally administered unicast MAC.
func randomMAC() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random MAC: %w", err)
	}
	b[0] = b[0]&0xfc | 0x02
	return net.HardwareAddr(b[:]).String(), nil
}
