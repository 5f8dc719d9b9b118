// Package wgtest makes the WireGuard values the tests of pkg build on:
// random keys and allowed-IP networks. Every helper fails the test instead
// of returning an error.
package wgtest

import (
	"net"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PrivateKey is a new random private key.
func PrivateKey(tb testing.TB) wgtypes.Key {
	tb.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// PublicKey is the public key of a new random private key, for a peer whose
// private key the test never needs.
func PublicKey(tb testing.TB) wgtypes.Key {
	tb.Helper()
	return PrivateKey(tb).PublicKey()
}

// IPNet parses the CIDR s into the form wgtypes takes allowed IPs in, the
// address masked to the prefix.
func IPNet(tb testing.TB, s string) net.IPNet {
	tb.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		tb.Fatal(err)
	}
	return *n
}
