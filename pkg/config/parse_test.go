package config

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		field string // "" when the error is about the whole file
		words []string
	}{
		{"unknown field", `{"name":"a","wg_prot":51820}`, "wg_prot", []string{"unknown field", "spelling"}},
		{"unknown hook field", `{"hooks":[{"name":"a","path":"/x","timeuot":"3s"}]}`, "timeuot", []string{"unknown field"}},
		{"wrong type", `{"subnet_prefix":"48"}`, "subnet_prefix", []string{"must be a JSON int", "string"}},
		{"wrong type string", `{"name":7}`, "name", []string{"must be a JSON string", "number"}},
		{"wrong type hook", `{"hooks":[{"name":7}]}`, "hooks.name", []string{"must be a JSON string"}},
		{"syntax error", `{"name": "a",, }`, "", []string{"not valid JSON at line 1, column 14"}},
		{"syntax error on a later line", "{\n  \"name\": \"a\",\n  \"wg_port\": 5,,\n}", "", []string{"not valid JSON at line 3, column 16"}},
		{"missing colon", `{"name" "a"}`, "", []string{"not valid JSON at line 1, column"}},
		{"truncated", `{"name": "a"`, "", []string{"not valid JSON", "truncated"}},
		{"empty", ``, "", []string{"empty file", "ikto-init"}},
		{"only whitespace", " \n\t", "", []string{"empty file"}},
		{"array", `[{"name":"a"}]`, "", []string{"must be a JSON object", "array"}},
		{"trailing object", `{"name":"a"} {"name":"b"}`, "", []string{"trailing data"}},
		{"trailing brace", `{"name":"a"} }`, "", []string{"trailing data"}},
		{"trailing junk", `{"name":"a"} x`, "", []string{"trailing data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.in, c)
			}
			if tt.field != "" {
				checkFieldError(t, err, tt.field, tt.words...)
				return
			}
			var fe *FieldError
			if errors.As(err, &fe) {
				t.Errorf("Parse(%q) error %q is a FieldError for %q; want a whole-file error", tt.in, err, fe.Field)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error %q does not contain %q", tt.in, err, w)
				}
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"private_address":"fd10:2082:5bc1::","nats_url":"nats://"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		PrivateAddress: "fd10:2082:5bc1::",
		SubnetPrefix:   48,
		MeshCIDR:       "fd10::/16",
		WGDevName:      "wg-ikto",
		WGPort:         51820,
		NATSURL:        "nats://",
		NATSKV:         "ikto-mesh",
		WGBackend:      "auto",
		WGMTU:          1420,
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Parse defaults (-want +got):\n%s", diff)
	}
	// Given values are kept, not replaced by defaults.
	fx := newFiles(t)
	c, err = parseMap(t, goodV4(fx))
	if err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, c).Resync; got != 30*time.Second {
		t.Errorf("Resync = %v, want 30s", got)
	}
	m := goodV4(fx)
	m["wg_dev_name"], m["wg_port"], m["nats_kv"] = "wg0", 4500, "other"
	m["wg_backend"], m["wg_mtu"], m["resync_interval"] = "kernel", 1380, "5s"
	c, err = parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.MeshCIDR, c.SubnetPrefix, c.WGDevName, c.WGPort, c.NATSKV, c.WGBackend, c.WGMTU, resolve(t, c).Resync}
	wantKept := []any{"100.64.0.0/10", 24, "wg0", 4500, "other", "kernel", 1380, 5 * time.Second}
	if diff := cmp.Diff(wantKept, got); diff != "" {
		t.Errorf("Parse replaced given values (-want +got):\n%s", diff)
	}
}

func TestDerivedValues(t *testing.T) {
	fx := newFiles(t)
	tests := []struct {
		name                 string
		base                 func(files) map[string]any
		url                  string
		mesh, prefix, device string
		advertise            string
		urls                 []string
	}{
		{"ipv6", goodV6, "nats://a:4222, nats://b:4222 ,", "fd10::/16", "fd10:2082:5bc1::/48", "fd10:2082:5bc1::/16", "192.0.2.10", []string{"nats://a:4222", "nats://b:4222"}},
		{"ipv4", goodV4, "nats://", "100.64.0.0/10", "100.64.12.0/24", "100.64.12.0/10", "2001:db8::10", []string{"nats://"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.base(fx)
			c, err := parseMap(t, m)
			if err != nil {
				t.Fatal(err)
			}
			s := resolve(t, c)
			got := []string{s.Mesh.String(), s.Prefix.String(), s.Device.Address.String(), s.Advertise.String()}
			want := []string{tt.mesh, tt.prefix, tt.device, tt.advertise}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Mesh, Prefix, Device.Address, Advertise (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.urls, SplitURLs(tt.url)); diff != "" {
				t.Errorf("SplitURLs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	fx := newFiles(t)
	write := func(name string, m map[string]any) string {
		data, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(fx.dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	good := write("good.json", goodV6(fx))
	c, err := Load(good)
	if err != nil {
		t.Fatalf("Load(%s): %v", good, err)
	}
	if p := c.Prefix; p != netip.MustParsePrefix("fd10:2082:5bc1::/48") {
		t.Errorf("Load(%s) claims %s", good, p)
	}

	bad := goodV6(fx)
	bad["private_address"] = "fd10:2082:5bc1::1"
	badPath := write("bad.json", bad)
	_, err = Load(badPath)
	checkFieldError(t, err, "private_address", badPath, "use fd10:2082:5bc1::")

	missing := filepath.Join(fx.dir, "missing.json")
	if _, err := Load(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(%s) = %v, want a not-exist error naming the file", missing, err)
	}
}

// resolve is c.Resolve for a config the test knows to be valid.
func resolve(t *testing.T, c *Config) *Settings {
	t.Helper()
	s, err := c.Resolve()
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return s
}
