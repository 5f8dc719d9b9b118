package peer

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fuzzRules are the meshes FuzzCheck checks records against: the contract's
// default IPv6 mesh of /48s and an IPv4 one of /24s.
var fuzzRules = []Rules{
	{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48},
	{Mesh: netip.MustParsePrefix("100.64.0.0/10"), Bits: 24},
}

// FuzzCheck feeds arbitrary bucket entries to Rules.Check. Whatever the
// input, Check must not panic, must reject with a known Reason, and must
// accept only records that every docs/contract.md §4 rule allows. With deriveKey set the
// bucket key is computed from the value's allowed_ip, so the fuzzer gets past
// the key check and explores the rules behind it.
func FuzzCheck(f *testing.F) {
	good := Record{Name: "a", PublicKey: testKey(1).String(), AdvertiseAddress: "198.18.0.2", AllowedIP: "fd10:2082:5bc1::/48", WGPort: 51820}
	f.Add(Key(netip.MustParsePrefix(good.AllowedIP)), good.Encode(), false, false)
	v4 := good
	v4.AllowedIP, v4.AdvertiseAddress = "100.64.7.0/24", "2001:db8::7"
	f.Add("", v4.Encode(), true, true)
	for _, s := range []string{
		`{"allowed_ip":"::/0","public_key":"` + good.PublicKey + `","advertise_address":"198.18.0.2","wg_port":1}`,
		`{"allowed_ip":"0.0.0.0/0","public_key":"` + good.PublicKey + `","advertise_address":"198.18.0.2","wg_port":1}`,
		`{"allowed_ip":"fd10::/15","wg_port":65536}`,
		`{"allowed_ip":"::ffff:100.64.7.0/120","advertise_address":"::ffff:127.0.0.1"}`,
		`{"allowed_ip":"fd10:2082:5bc1::/48","advertise_address":"fe80::1","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`,
		`{"allowed_ip":"fd10:2082:5bc1::/48","advertise_address":"fd10:1::1","public_key":"` + good.PublicKey + `","wg_port":5}`,
		`{"ALLOWED_IP":"fd10:2082:5bc1::/48","allowed_ip":"fd10:1::/48"}`,
		`[]`, `null`, `{"wg_port":1e3}`, "\xff\xfe{}",
	} {
		f.Add("", []byte(s), true, false)
	}
	f.Fuzz(func(t *testing.T, key string, value []byte, deriveKey, v4Mesh bool) {
		ru := fuzzRules[0]
		if v4Mesh {
			ru = fuzzRules[1]
		}
		if deriveKey {
			var r Record
			_ = json.Unmarshal(value, &r) // best effort: garbage keeps an empty allowed_ip
			key = PeersPrefix + encode(r.AllowedIP)
		}
		acc, rej := ru.Check(key, value, 42)
		if rej != nil {
			checkRejection(t, rej, key)
			return
		}
		checkAccepted(t, ru, key, value, acc)
		// An accepted record's own encoding is accepted as the same peer: what
		// an agent applies does not depend on how the JSON was spelled.
		again, rej := ru.Check(key, acc.Record.Encode(), 42)
		if rej != nil {
			t.Fatalf("re-encoded accepted record rejected: %v", rej)
		}
		if again.Prefix != acc.Prefix || again.PublicKey != acc.PublicKey || again.Endpoint != acc.Endpoint {
			t.Fatalf("re-encoded record accepted differently: %+v, then %+v", acc, again)
		}
	})
}

func checkRejection(t *testing.T, rej *Rejection, key string) {
	t.Helper()
	if !slices.Contains(Reasons, rej.Reason) {
		t.Fatalf("rejection with unknown reason %q: %v", rej.Reason, rej)
	}
	if rej.Key != key || rej.Revision != 42 || rej.Detail == "" {
		t.Fatalf("rejection does not carry key, revision and detail: %+v", rej)
	}
}

// checkAccepted asserts every acceptance rule of docs/contract.md §4 on acc, computed
// independently of Check's own code path where it can be.
func checkAccepted(t *testing.T, ru Rules, key string, value []byte, acc Accepted) {
	t.Helper()
	p := acc.Prefix
	switch {
	case len(value) > MaxValueSize:
		t.Fatalf("accepted a %d-byte value", len(value))
	case !p.IsValid() || p.Masked() != p || p.String() != acc.AllowedIP:
		t.Fatalf("accepted non-canonical prefix %q (parsed %s)", acc.AllowedIP, p)
	case key != Key(p) || acc.Key != key:
		t.Fatalf("accepted %s under key %s (want %s)", p, key, Key(p))
	case p.Bits() != ru.Bits || p.Addr().BitLen() != ru.Mesh.Addr().BitLen():
		t.Fatalf("accepted %s in a mesh of /%d", p, ru.Bits)
	case !ru.Mesh.Contains(p.Addr()) || !ru.Mesh.Contains(lastAddr(p)):
		// Both ends inside the mesh: the record cannot widen what it routes.
		t.Fatalf("accepted %s, which is not inside mesh %s", p, ru.Mesh)
	case acc.PublicKey == (wgtypes.Key{}) || acc.PublicKey.String() != acc.Record.PublicKey && !sameKey(acc):
		t.Fatalf("accepted public key %q as %s", acc.Record.PublicKey, acc.PublicKey)
	case !UsableUnicast(acc.Endpoint.Addr()) || acc.Endpoint.Addr().Is4In6() || ru.Mesh.Contains(acc.Endpoint.Addr()):
		t.Fatalf("accepted endpoint %s", acc.Endpoint)
	case acc.Endpoint.Port() == 0 || int(acc.Endpoint.Port()) != acc.WGPort:
		t.Fatalf("accepted port %d (endpoint %s)", acc.WGPort, acc.Endpoint)
	case acc.Revision != 42:
		t.Fatalf("accepted with revision %d, want 42", acc.Revision)
	}
}

// sameKey allows a public key spelled in another valid base64 form (the
// parser is the judge) as long as it decodes to the accepted key.
func sameKey(acc Accepted) bool {
	k, err := wgtypes.ParseKey(acc.Record.PublicKey)
	return err == nil && k == acc.PublicKey
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// testKey is a fixed, valid public key derived from n, so seeds and corpus
// entries are reproducible.
func testKey(n byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = n + byte(i)
	}
	return k
}
