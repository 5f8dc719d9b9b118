package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// files is a set of real files a configuration can name, in a fresh directory.
type files struct {
	dir, key, worldKey, notKey, zeroKey, creds, ca, cert, tlsKey string
	hook                                                         string // an executable only root may replace
}

func newFiles(t testing.TB) files {
	t.Helper()
	dir := t.TempDir()
	fx := files{
		dir:      dir,
		key:      filepath.Join(dir, "wg.key"),
		worldKey: filepath.Join(dir, "world.key"),
		notKey:   filepath.Join(dir, "not.key"),
		zeroKey:  filepath.Join(dir, "zero.key"),
		creds:    filepath.Join(dir, "nats.creds"),
		ca:       filepath.Join(dir, "ca.pem"),
		cert:     filepath.Join(dir, "cert.pem"),
		tlsKey:   filepath.Join(dir, "key.pem"),
		hook:     filepath.Join(dir, "ikto-hook-route"),
	}
	if _, err := CreatePrivateKey(fx.key); err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(fx.key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := selfSignedPEM(t)
	for path, content := range map[string]string{
		fx.worldKey: string(k),
		fx.notKey:   "this is not a key\n",
		fx.zeroKey:  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
		fx.creds:    userCreds(t), fx.ca: certPEM, fx.cert: certPEM, fx.tlsKey: keyPEM,
		fx.hook: "#!/bin/sh\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// WriteFile's mode is filtered by the umask; set it explicitly.
	if err := os.Chmod(fx.worldKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fx.hook, 0o755); err != nil {
		t.Fatal(err)
	}
	return fx
}

// goodV6 is a valid IPv6 host configuration as ikto-init would print it, plus
// a key file and a server URL filled in.
func goodV6(fx files) map[string]any {
	return map[string]any{
		"name":              "host-a",
		"advertise_address": "192.0.2.10",
		"private_address":   "fd10:2082:5bc1::",
		"subnet_prefix":     48,
		"mesh_cidr":         "fd10::/16",
		"wg_dev_name":       "wg-ikto",
		"wg_port":           51820,
		"private_key_path":  fx.key,
		"nats_creds":        "",
		"nats_url":          "nats://nats.example:4222",
		"nats_kv":           "ikto-mesh",
	}
}

// goodV4 is the contract's IPv4 example: -m 100.64.0.0/10 -p 24.
func goodV4(fx files) map[string]any {
	m := goodV6(fx)
	m["mesh_cidr"] = "100.64.0.0/10"
	m["subnet_prefix"] = 24
	m["private_address"] = "100.64.12.0"
	m["advertise_address"] = "2001:db8::10"
	return m
}

func parseMap(t *testing.T, m map[string]any) (*Config, error) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(strings.NewReader(string(data)))
}

// checkFieldError fails unless err is a *FieldError for field whose message
// contains every one of words.
func checkFieldError(t *testing.T, err error, field string, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one for field %s", field)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q (%T) is not a *FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("error %q names field %q, want %q", err, fe.Field, field)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestValidateGood(t *testing.T) {
	fx := newFiles(t)
	tests := []struct {
		name string
		base func(files) map[string]any
		mod  func(m map[string]any)
	}{
		{"ipv6 default", goodV6, nil},
		{"ipv4 100.64.0.0/10 /24", goodV4, nil},
		{"ipv4 /24 mesh of /28s", goodV4, func(m map[string]any) {
			m["mesh_cidr"], m["subnet_prefix"], m["private_address"] = "10.9.8.0/24", 28, "10.9.8.240"
		}},
		{"ipv4 /32 hosts", goodV4, func(m map[string]any) {
			m["subnet_prefix"], m["private_address"] = 32, "100.100.3.7"
		}},
		{"ipv6 /128 hosts", goodV6, func(m map[string]any) {
			m["subnet_prefix"], m["private_address"] = 128, "fd10::1"
		}},
		{"ipv6 advertise", goodV6, func(m map[string]any) { m["advertise_address"] = "2001:db8::1" }},
		{"several servers", goodV6, func(m map[string]any) {
			m["nats_url"] = "nats://a:4222, tls://b:4222,ws://c:80,wss://d"
		}},
		{"every optional field", goodV6, func(m map[string]any) {
			m["nats_creds"] = fx.creds
			m["wg_backend"] = "userspace"
			m["wg_mtu"] = 1280
			m["persistent_keepalive"] = 25
			m["nats_tls_ca"], m["nats_tls_cert"], m["nats_tls_key"] = fx.ca, fx.cert, fx.tlsKey
			m["nats_kv_replicas"] = 3
			m["nats_inbox_prefix"] = "_INBOX_UAB3.ikto"
			m["resync_interval"] = "1m"
			m["state_dir"] = "/var/lib/ikto"
			m["hooks"] = []any{
				map[string]any{"name": "route", "path": fx.hook, "config": map[string]any{"table": 100}},
				map[string]any{"name": "firewall", "path": fx.hook},
			}
		}},
		{"ipv4 small mtu", goodV4, func(m map[string]any) { m["wg_mtu"] = 576 }},
		{"kernel backend", goodV6, func(m map[string]any) { m["wg_backend"] = "kernel" }},
		{"port bounds", goodV6, func(m map[string]any) { m["wg_port"] = 65535 }},
		{"15-char device", goodV6, func(m map[string]any) { m["wg_dev_name"] = "wg.ikto_mesh-15" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.base(fx)
			if tt.mod != nil {
				tt.mod(m)
			}
			c, err := parseMap(t, m)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	fx := newFiles(t)
	set := func(kv ...any) func(map[string]any) {
		return func(m map[string]any) {
			for i := 0; i < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
		}
	}
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	tests := []struct {
		name  string
		base  func(files) map[string]any
		mod   func(map[string]any)
		field string
		words []string
	}{
		// Addressing.
		{"mesh not a CIDR", goodV6, set("mesh_cidr", "fd10::"), "mesh_cidr", []string{`"fd10::"`, "not a CIDR", "fd10::/16"}},
		{"mesh garbage", goodV6, set("mesh_cidr", "mesh"), "mesh_cidr", []string{"not a CIDR"}},
		{"mesh host bits", goodV6, set("mesh_cidr", "fd10::1/16"), "mesh_cidr", []string{"host bits", "use fd10::/16"}},
		{"mesh v4 host bits", goodV4, set("mesh_cidr", "100.64.0.1/10"), "mesh_cidr", []string{"host bits", "use 100.64.0.0/10"}},
		{"mesh v4-mapped", goodV4, set("mesh_cidr", "::ffff:100.64.0.0/106"), "mesh_cidr", []string{"IPv4-mapped", "plain IPv4"}},
		{"subnet equal to mesh", goodV6, set("subnet_prefix", 16), "subnet_prefix", []string{"16", "longer than the mesh prefix /16"}},
		{"subnet shorter than mesh", goodV6, set("subnet_prefix", 8), "subnet_prefix", []string{"longer than the mesh prefix /16"}},
		{"subnet negative", goodV6, set("subnet_prefix", -48), "subnet_prefix", []string{"-48"}},
		{"subnet past v6", goodV6, set("subnet_prefix", 129), "subnet_prefix", []string{"129", "at most /128"}},
		{"subnet past v4", goodV4, set("subnet_prefix", 33), "subnet_prefix", []string{"33", "at most /32"}},
		{"subnet default 48 in v4 mesh", goodV4, del("subnet_prefix"), "subnet_prefix", []string{"48", "at most /32"}},
		{"private missing", goodV6, del("private_address"), "private_address", []string{"missing", "ikto-init"}},
		{"private not an IP", goodV6, set("private_address", "fd10:zz::"), "private_address", []string{"not an IP address"}},
		{"private is a prefix", goodV6, set("private_address", "fd10:2082:5bc1::/48"), "private_address", []string{"not an IP address"}},
		{"private with zone", goodV6, set("private_address", "fd10:2082:5bc1::%eth0"), "private_address", []string{"not an IP address"}},
		{"private outside mesh", goodV6, set("private_address", "fd11:2082:5bc1::"), "private_address", []string{"fd11:2082:5bc1::", "outside mesh_cidr fd10::/16"}},
		{"private v4 in v6 mesh", goodV6, set("private_address", "100.64.12.0"), "private_address", []string{"outside mesh_cidr"}},
		{"private v4 outside mesh", goodV4, set("private_address", "100.128.0.0"), "private_address", []string{"outside mesh_cidr 100.64.0.0/10"}},
		{"private misaligned", goodV6, set("private_address", "fd10:2082:5bc1::1"), "private_address", []string{"not aligned to subnet_prefix /48", "use fd10:2082:5bc1::"}},
		{"private misaligned v4", goodV4, set("private_address", "100.64.12.7"), "private_address", []string{"not aligned to subnet_prefix /24", "use 100.64.12.0"}},
		{"advertise missing", goodV6, del("advertise_address"), "advertise_address", []string{"missing", "underlay IP"}},
		{"advertise empty", goodV6, set("advertise_address", ""), "advertise_address", []string{"missing"}},
		{"advertise hostname", goodV6, set("advertise_address", "host-a.example"), "advertise_address", []string{"not an IP address"}},
		{"advertise with port", goodV6, set("advertise_address", "192.0.2.10:51820"), "advertise_address", []string{"not an IP address"}},
		{"advertise unspecified", goodV6, set("advertise_address", "0.0.0.0"), "advertise_address", []string{"not a usable unicast"}},
		{"advertise loopback", goodV6, set("advertise_address", "::1"), "advertise_address", []string{"not a usable unicast"}},
		{"advertise multicast", goodV6, set("advertise_address", "ff02::1"), "advertise_address", []string{"not a usable unicast"}},
		{"advertise broadcast", goodV6, set("advertise_address", "255.255.255.255"), "advertise_address", []string{"not a usable unicast"}},
		{"advertise mapped loopback", goodV6, set("advertise_address", "::ffff:127.0.0.1"), "advertise_address", []string{"not a usable unicast"}},

		// Device.
		{"dev name too long", goodV6, set("wg_dev_name", "wg-ikto-too-long"), "wg_dev_name", []string{`"wg-ikto-too-long"`, "1-15"}},
		{"dev name space", goodV6, set("wg_dev_name", "wg ikto"), "wg_dev_name", []string{"not a valid interface name"}},
		{"dev name slash", goodV6, set("wg_dev_name", "wg/ikto"), "wg_dev_name", []string{"not a valid interface name"}},
		{"port negative", goodV6, set("wg_port", -1), "wg_port", []string{"-1", "1-65535"}},
		{"port 65536", goodV6, set("wg_port", 65536), "wg_port", []string{"65536", "not a UDP port (1-65535)"}},
		{"unknown backend", goodV6, set("wg_backend", "wireguard"), "wg_backend", []string{`"wireguard"`, "auto, kernel, userspace"}},
		{"mtu too small v6", goodV6, set("wg_mtu", 1279), "wg_mtu", []string{"1279", "1280-65535"}},
		{"mtu too small v4", goodV4, set("wg_mtu", 575), "wg_mtu", []string{"575", "576-65535"}},
		{"mtu too big", goodV6, set("wg_mtu", 65536), "wg_mtu", []string{"65536"}},
		{"mtu negative", goodV6, set("wg_mtu", -1), "wg_mtu", []string{"-1"}},
		{"keepalive negative", goodV6, set("persistent_keepalive", -1), "persistent_keepalive", []string{"0 = off"}},
		{"keepalive too big", goodV6, set("persistent_keepalive", 65536), "persistent_keepalive", []string{"65536"}},

		// Key file.
		{"key path missing", goodV6, del("private_key_path"), "private_key_path", []string{"missing", "ikto-init --private-key-path"}},
		{"key file missing", goodV6, set("private_key_path", filepath.Join(fx.dir, "nope.key")), "private_key_path",
			[]string{"nope.key", "does not exist", "ikto-init --private-key-path"}},
		{"key world-readable", goodV6, set("private_key_path", fx.worldKey), "private_key_path", []string{"world.key", "group or others", "0644", "chmod 600"}},
		{"key not a key", goodV6, set("private_key_path", fx.notKey), "private_key_path", []string{"not.key", "base64 WireGuard key"}},
		{"key all zero", goodV6, set("private_key_path", fx.zeroKey), "private_key_path", []string{"all-zero"}},
		{"key is a directory", goodV6, set("private_key_path", fx.dir), "private_key_path", []string{"not a regular file"}},

		// NATS.
		{"nats_url empty", goodV6, set("nats_url", ""), "nats_url", []string{"missing", "nats://"}},
		{"nats_url absent", goodV6, del("nats_url"), "nats_url", []string{"missing"}},
		{"nats_url bare scheme", goodV6, set("nats_url", "nats://"), "nats_url", []string{`"nats://"`, "not a server URL"}},
		{"nats_url no scheme", goodV6, set("nats_url", "nats.example:4222"), "nats_url", []string{"not a server URL"}},
		{"nats_url bad scheme", goodV6, set("nats_url", "http://nats.example:4222"), "nats_url", []string{"http://nats.example:4222", "nats, tls, ws or wss"}},
		{"nats_url second bad", goodV6, set("nats_url", "nats://a:4222,https://b"), "nats_url", []string{"https://b", "scheme"}},
		{"bucket dot", goodV6, set("nats_kv", "ikto.mesh"), "nats_kv", []string{`"ikto.mesh"`, "not a valid bucket name"}},
		{"bucket space", goodV6, set("nats_kv", "ikto mesh"), "nats_kv", []string{"not a valid bucket name"}},
		{"bucket wildcard", goodV6, set("nats_kv", "ikto*"), "nats_kv", []string{"not a valid bucket name"}},
		{"creds missing", goodV6, set("nats_creds", filepath.Join(fx.dir, "nope.creds")), "nats_creds", []string{"nope.creds", "does not exist"}},
		{"tls ca missing", goodV6, set("nats_tls_ca", filepath.Join(fx.dir, "nope-ca.pem")), "nats_tls_ca", []string{"nope-ca.pem", "does not exist"}},
		{"tls cert without key", goodV6, set("nats_tls_cert", fx.cert), "nats_tls_cert", []string{"nats_tls_key", "together"}},
		{"tls key without cert", goodV6, set("nats_tls_key", fx.tlsKey), "nats_tls_cert", []string{"together"}},
		{"tls cert missing", goodV6, set("nats_tls_cert", filepath.Join(fx.dir, "nope-cert.pem"), "nats_tls_key", fx.tlsKey), "nats_tls_cert", []string{"does not exist"}},
		{"replicas too many", goodV6, set("nats_kv_replicas", 6), "nats_kv_replicas", []string{"6", "1-5"}},
		{"replicas negative", goodV6, set("nats_kv_replicas", -1), "nats_kv_replicas", []string{"1-5"}},
		{"inbox prefix wildcard", goodV6, set("nats_inbox_prefix", "_INBOX_a.>"), "nats_inbox_prefix", []string{`"_INBOX_a.>"`, "subject prefix", "ikto-admin enroll"}},
		{"inbox prefix trailing dot", goodV6, set("nats_inbox_prefix", "_INBOX_a."), "nats_inbox_prefix", []string{"subject prefix"}},
		{"inbox prefix space", goodV6, set("nats_inbox_prefix", "_INBOX a"), "nats_inbox_prefix", []string{"subject prefix"}},
		{"inbox prefix too long", goodV6, set("nats_inbox_prefix", strings.Repeat("a", 129)), "nats_inbox_prefix", []string{"at most 128"}},

		// Agent options and hooks.
		{"resync not a duration", goodV6, set("resync_interval", "soon"), "resync_interval", []string{`"soon"`, "duration", "30s"}},
		{"resync bare number", goodV6, set("resync_interval", "30"), "resync_interval", []string{"duration"}},
		{"resync too short", goodV6, set("resync_interval", "10ms"), "resync_interval", []string{"at least 100ms"}},
		{"resync negative", goodV6, set("resync_interval", "-1s"), "resync_interval", []string{"at least 100ms"}},
		{"state_dir relative", goodV6, set("state_dir", "var/lib/ikto"), "state_dir", []string{"absolute path"}},
		{"hook without name", goodV6, set("hooks", []any{map[string]any{"path": "/bin/true"}}), "hooks[0].name", []string{"missing"}},
		{"hook name twice", goodV6, set("hooks", []any{
			map[string]any{"name": "route", "path": "/bin/true"},
			map[string]any{"name": "route", "path": "/bin/false"},
		}), "hooks[1].name", []string{`"route"`, "another hook"}},
		{"hook bad sha256", goodV6, set("hooks", []any{map[string]any{"name": "route", "path": "/bin/true", "sha256": "abc"}}), "hooks[0].sha256", []string{"64 hex digits", "sha256sum"}},
		{"hook bad timeout", goodV6, set("hooks", []any{map[string]any{"name": "route", "path": "/bin/true", "timeout": "5"}}), "hooks[0].timeout", []string{"duration"}},
		{"hook relative path", goodV6, set("hooks", []any{map[string]any{"name": "route", "path": "ikto-hook-route"}}), "hooks[0].path", []string{"absolute path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.base(fx)
			tt.mod(m)
			c, err := parseMap(t, m)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkFieldError(t, c.Validate(), tt.field, tt.words...)
		})
	}
}

// TestValidatePortZero: Parse treats wg_port 0 as absent (the default), as the
// JSON cannot tell them apart; a Config built in code with port 0 is invalid.
func TestValidatePortZero(t *testing.T) {
	fx := newFiles(t)
	m := goodV6(fx)
	m["wg_port"] = 0
	c, err := parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	if c.WGPort != DefaultPort {
		t.Errorf("Parse with wg_port 0: WGPort = %d, want the default %d", c.WGPort, DefaultPort)
	}
	c.WGPort = 0
	checkFieldError(t, c.Validate(), "wg_port", "0 is not a UDP port")
}

func TestValidateWrapsCause(t *testing.T) {
	fx := newFiles(t)
	m := goodV6(fx)
	m["private_key_path"] = fx.worldKey
	c, err := parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if err := c.Validate(); !errors.As(err, &fe) || fe.Err == nil || errors.Unwrap(err) == nil {
		t.Fatalf("Validate = %v, want a *FieldError carrying its cause", err)
	}
}
