package peer

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
)

func TestKeyVector(t *testing.T) {
	got := Key(netip.MustParsePrefix("fd10:2082:5bc1::/48"))
	if want := "peers.ZmQxMDoyMDgyOjViYzE6Oi80OA=="; got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
}

func TestRevokedKeyRoundTrip(t *testing.T) {
	k := wgtest.PublicKey(t)
	rk := RevokedKey(k)
	if !strings.HasPrefix(rk, "revoked.") || !strings.HasSuffix(rk, "=") {
		t.Fatalf("RevokedKey = %q: want revoked.<padded base64url>", rk)
	}
	back, err := ParseRevokedKey(rk)
	if err != nil || back != k {
		t.Fatalf("ParseRevokedKey(%q) = %v, %v; want %v", rk, back, err, k)
	}
	for _, bad := range []string{"peers.x", "revoked.", "revoked.AAAA", "revoked.!!"} {
		if _, err := ParseRevokedKey(bad); err == nil {
			t.Errorf("ParseRevokedKey(%q) succeeded", bad)
		}
	}
}

var rules6 = Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48}

func record(t testing.TB, prefix string) Record {
	return Record{Name: "h-" + prefix, PublicKey: wgtest.PublicKey(t).String(), AdvertiseAddress: "198.18.0.2", AllowedIP: prefix, WGPort: 51820}
}

func TestCheck(t *testing.T) {
	good := record(t, "fd10:2082:5bc1::/48")
	goodKey := Key(netip.MustParsePrefix(good.AllowedIP))
	with := func(f func(*Record)) []byte { r := good; f(&r); return r.Encode() }
	keyOf := func(p string) string { return PeersPrefix + encode(p) }

	tests := []struct {
		name  string
		rules Rules
		key   string
		value []byte
		want  Reason // "" = accepted
	}{
		{"accepted", rules6, goodKey, good.Encode(), ""},
		{"unknown fields ignored", rules6, goodKey, []byte(strings.Replace(string(good.Encode()), "{", `{"future":[1,2],`, 1)), ""},
		{"ipv6 endpoint", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "fd00::5" }), ""},
		{"too large", rules6, goodKey, []byte(`{"name":"` + strings.Repeat("x", MaxValueSize) + `"}`), ReasonTooLarge},
		{"not json", rules6, goodKey, []byte("hello"), ReasonMalformed},
		{"json array", rules6, goodKey, []byte(`[1,2]`), ReasonMalformed},
		{"json string", rules6, goodKey, []byte(`"x"`), ReasonMalformed},
		{"empty", rules6, goodKey, nil, ReasonMalformed},
		{"wrong type", rules6, goodKey, []byte(`{"wg_port":"x"}`), ReasonMalformed},
		{"no prefix", rules6, goodKey, with(func(r *Record) { r.AllowedIP = "" }), ReasonBadPrefix},
		{"host bits", rules6, keyOf("fd10:2082:5bc1::1/48"), with(func(r *Record) { r.AllowedIP = "fd10:2082:5bc1::1/48" }), ReasonBadPrefix},
		{"not canonical text", rules6, keyOf("FD10:2082:5BC1::/48"), with(func(r *Record) { r.AllowedIP = "FD10:2082:5BC1::/48" }), ReasonBadPrefix},
		{"key mismatch", rules6, Key(netip.MustParsePrefix("fd10:1::/48")), good.Encode(), ReasonKeyMismatch},
		{"default route v6", rules6, keyOf("::/0"), with(func(r *Record) { r.AllowedIP = "::/0" }), ReasonOutsideMesh},
		{"default route v4", rules6, keyOf("0.0.0.0/0"), with(func(r *Record) { r.AllowedIP = "0.0.0.0/0" }), ReasonOutsideMesh},
		{"outside mesh", rules6, keyOf("fd11::/48"), with(func(r *Record) { r.AllowedIP = "fd11::/48" }), ReasonOutsideMesh},
		{"covers the mesh", rules6, keyOf("fd10::/15"), with(func(r *Record) { r.AllowedIP = "fd10::/15" }), ReasonOutsideMesh},
		{"too wide", rules6, keyOf("fd10::/32"), with(func(r *Record) { r.AllowedIP = "fd10::/32" }), ReasonWrongLength},
		{"too narrow", rules6, keyOf("fd10:1:2:3::/64"), with(func(r *Record) { r.AllowedIP = "fd10:1:2:3::/64" }), ReasonWrongLength},
		{"bad key", rules6, goodKey, with(func(r *Record) { r.PublicKey = "nope" }), ReasonBadPublicKey},
		{"zero key", rules6, goodKey, with(func(r *Record) { r.PublicKey = wgtypes.Key{}.String() }), ReasonBadPublicKey},
		{"no endpoint", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "" }), ReasonBadEndpoint},
		{"hostname endpoint", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "host.example" }), ReasonBadEndpoint},
		{"unspecified", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "0.0.0.0" }), ReasonBadEndpoint},
		{"unspecified v6", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "::" }), ReasonBadEndpoint},
		{"loopback", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "127.0.0.1" }), ReasonBadEndpoint},
		{"multicast", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "ff02::1" }), ReasonBadEndpoint},
		{"broadcast", rules6, goodKey, with(func(r *Record) { r.AdvertiseAddress = "255.255.255.255" }), ReasonBadEndpoint},
		{"port 0", rules6, goodKey, with(func(r *Record) { r.WGPort = 0 }), ReasonBadPort},
		{"port 65536", rules6, goodKey, with(func(r *Record) { r.WGPort = 65536 }), ReasonBadPort},
		{"ipv4 mesh", Rules{Mesh: netip.MustParsePrefix("100.64.0.0/10"), Bits: 24}, keyOf("100.64.7.0/24"),
			with(func(r *Record) { r.AllowedIP = "100.64.7.0/24" }), ""},
		{"ipv6 prefix in ipv4 mesh", Rules{Mesh: netip.MustParsePrefix("100.64.0.0/10"), Bits: 24}, goodKey, good.Encode(), ReasonOutsideMesh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acc, rej := tt.rules.Check(tt.key, tt.value, 7)
			if tt.want == "" {
				if rej != nil {
					t.Fatalf("rejected: %v", rej)
				}
				if acc.Revision != 7 || acc.Key != tt.key || !acc.Endpoint.IsValid() {
					t.Fatalf("accepted record incomplete: %+v", acc)
				}
				return
			}
			if rej == nil {
				t.Fatalf("accepted, want rejection %s", tt.want)
			}
			if rej.Reason != tt.want || rej.Key != tt.key || rej.Revision != 7 || rej.Detail == "" {
				t.Fatalf("rejection = %+v, want reason %s for key %s", rej, tt.want, tt.key)
			}
		})
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
