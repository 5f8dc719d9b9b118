package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// FuzzParseValidate feeds arbitrary bytes to Parse and Validate, as a config
// file would. Neither may panic; every failure must be an error (a
// *FieldError from Validate, naming a real field); and a config that passes
// must describe a host an agent can run: its prefix inside the mesh and
// aligned, a usable advertise address, a port, a server. The file paths in
// the input are swapped for fixtures, so the fuzzer never reads (or blocks
// on) files of the machine it runs on.
func FuzzParseValidate(f *testing.F) {
	fx := newFiles(f)
	for _, m := range []map[string]any{goodV6(fx), goodV4(fx)} {
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"private_address":"fd10::1","nats_url":"nats://a"}`))
	f.Add([]byte(`{"mesh_cidr":"0.0.0.0/0","subnet_prefix":32,"private_address":"1.2.3.4"}`))
	f.Add([]byte(`{"hooks":[{"name":"r","path":"/x","timeout":"1s","config":{"a":[1]}}]}`))
	fields := configFields()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(bytes.NewReader(data))
		if err != nil {
			var fe *FieldError
			if err.Error() == "" || errors.As(err, &fe) && (fe.Field == "" || fe.Msg == "") {
				t.Fatalf("Parse error %q (%#v) says nothing", err, err)
			}
			return
		}
		useFixtures(c, fx)
		if err := c.Validate(); err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Msg == "" || !fields.MatchString(fe.Field) {
				t.Fatalf("Validate error %q (%T) does not name a config field", err, err)
			}
			return
		}
		checkValid(t, c)
		// What passes survives a write and a read unchanged.
		once, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(bytes.NewReader(once))
		if err != nil {
			t.Fatalf("Parse of a valid config's own JSON %s: %v", once, err)
		}
		twice, _ := json.Marshal(back)
		if !bytes.Equal(once, twice) {
			t.Fatalf("config changed in a write and read:\n%s\n%s", once, twice)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("valid config invalid after a write and read: %v", err)
		}
	})
}

// useFixtures points every file field at a fixture, picked by the length of
// the path the input gave, so the fuzzer still reaches each file's failures.
func useFixtures(c *Config, fx files) {
	pick := func(path string, choices ...string) string {
		if path == "" {
			return ""
		}
		return choices[len(path)%len(choices)]
	}
	missing := filepath.Join(fx.dir, "missing")
	c.PrivateKeyPath = pick(c.PrivateKeyPath, fx.key, fx.worldKey, fx.notKey, missing)
	c.NATSCreds = pick(c.NATSCreds, fx.creds, missing)
	c.NATSTLSCA = pick(c.NATSTLSCA, fx.ca, missing)
	c.NATSTLSCert = pick(c.NATSTLSCert, fx.cert, missing)
	c.NATSTLSKey = pick(c.NATSTLSKey, fx.tlsKey, missing)
	for i, h := range c.Hooks {
		if filepath.IsAbs(h.Path) { // a relative one fails before any file is read
			c.Hooks[i].Path = pick(h.Path, fx.hook, missing)
		}
	}
}

// configFields matches the names a FieldError may carry: a Config field, or
// hooks[N]. and a HookConfig field.
func configFields() *regexp.Regexp {
	tags := func(v any) []string {
		var out []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			out = append(out, regexp.QuoteMeta(name))
		}
		return out
	}
	return regexp.MustCompile(`^(` + strings.Join(tags(Config{}), "|") + `|hooks\[\d+\]\.(` + strings.Join(tags(HookConfig{}), "|") + `))$`)
}

// checkValid asserts what an agent relies on in a validated config.
func checkValid(t *testing.T, c *Config) {
	t.Helper()
	s, err := c.Resolve()
	if err != nil {
		t.Fatalf("Validate passed, Resolve failed: %v", err)
	}
	mesh, prefix, dev := s.Mesh, s.Prefix, s.Device.Address
	switch {
	case !mesh.IsValid() || mesh.Masked() != mesh || mesh.Addr().Is4In6():
		t.Fatalf("valid config with mesh %q", c.MeshCIDR)
	case prefix.Masked() != prefix || prefix.Bits() <= mesh.Bits() || !mesh.Contains(prefix.Addr()):
		t.Fatalf("valid config claims %s in mesh %s", prefix, mesh)
	case dev.Addr() != prefix.Addr() || dev.Bits() != mesh.Bits():
		t.Fatalf("valid config puts %s on the device for prefix %s in mesh %s", dev, prefix, mesh)
	case !peer.UsableUnicast(s.Advertise) || mesh.Contains(s.Advertise):
		t.Fatalf("valid config advertises %q", c.AdvertiseAddress)
	case c.WGPort < 1 || c.WGPort > 65535 || c.WGMTU < 576 || c.PersistentKeepalive < 0:
		t.Fatalf("valid config with port %d, mtu %d, keepalive %d", c.WGPort, c.WGMTU, c.PersistentKeepalive)
	case len(s.NATS.URLs) == 0 || !ValidDevName(c.WGDevName) || !ValidBucketName(c.NATSKV):
		t.Fatalf("valid config with urls %q, device %q, bucket %q", s.NATS.URLs, c.WGDevName, c.NATSKV)
	case s.Resync < 100*time.Millisecond:
		t.Fatalf("valid config resyncs every %s", s.Resync)
	}
	for _, u := range s.NATS.URLs {
		if err := ValidNATSURL(u); err != nil {
			t.Fatalf("valid config with server %q: %v", u, err)
		}
	}
	// The record this host would publish passes the rules other agents apply.
	rec := peer.Record{Name: c.Name, PublicKey: strings.Repeat("A", 42) + "E=", AdvertiseAddress: s.Advertise.String(), AllowedIP: prefix.String(), WGPort: c.WGPort}
	if _, rej := (peer.Rules{Mesh: mesh, Bits: c.SubnetPrefix}).Check(peer.Key(prefix), rec.Encode(), 1); rej != nil {
		t.Fatalf("valid config's own record is rejected by its mesh: %v", rej)
	}
}
