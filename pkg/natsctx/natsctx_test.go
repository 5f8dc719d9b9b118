package natsctx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/natsctx/natsctxtest"
)

// env is a fake environment: tests never read the real one, so a
// developer's own NATS_URL or nats contexts cannot change their outcome.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// A context as `nats context save` writes it: every field, most empty.
const prodContext = `{
  "description": "production",
  "url": "nats://prod-1:4222,nats://prod-2:4222",
  "socks_proxy": "",
  "token": "",
  "user": "ops",
  "password": "s3cret",
  "creds": "",
  "nkey": "",
  "cert": "",
  "key": "",
  "ca": "~/ca.pem",
  "nsc": "",
  "jetstream_domain": "",
  "jetstream_api_prefix": "",
  "jetstream_event_prefix": "",
  "inbox_prefix": "",
  "user_jwt": "",
  "color_scheme": "",
  "tls_first": false,
  "windows_cert_store": "",
  "windows_cert_match_by": "",
  "windows_cert_match": "",
  "windows_ca_certs_match": ""
}`

func TestLoadContextChoosesLikeTheNATSCLI(t *testing.T) {
	xdg := natsctxtest.WriteContexts(t, "prod", map[string]string{
		"prod":    prodContext,
		"staging": `{"url": "nats://staging:4222"}`,
		"lab":     `{"url": "nats://lab:4222"}`,
	})
	for _, tc := range []struct {
		what     string
		name     string
		env      env
		wantName string
		wantURL  string
	}{
		{"the selected context", "", env{"XDG_CONFIG_HOME": xdg}, "prod", "nats://prod-1:4222,nats://prod-2:4222"},
		{"NATS_CONTEXT over the selected one", "", env{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": "staging"}, "staging", "nats://staging:4222"},
		{"--context over NATS_CONTEXT", "lab", env{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": "staging"}, "lab", "nats://lab:4222"},
		{"nothing selected", "", env{"XDG_CONFIG_HOME": t.TempDir()}, "", ""},
		{"no HOME at all", "", env{}, "", ""},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c, err := LoadContext(tc.name, tc.env.get)
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != tc.wantName || c.URL != tc.wantURL {
				t.Errorf("context %q url %q, want %q url %q", c.Name, c.URL, tc.wantName, tc.wantURL)
			}
		})
	}
}

func TestLoadContextDefaultsToHOMEConfig(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, ".config", "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x.json"), []byte(`{"url":"nats://home:4222"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadContext("", env{"HOME": home, "NATS_CONTEXT": "x"}.get)
	if err != nil || c.URL != "nats://home:4222" {
		t.Errorf("LoadContext: %+v, %v; want ~/.config/nats/context/x.json", c, err)
	}
}

func TestLoadContextReadsTheFieldsIktoUses(t *testing.T) {
	home := t.TempDir()
	xdg := natsctxtest.WriteContexts(t, "", map[string]string{
		"prod":  prodContext,
		"files": `{"url": "tls://n:4222", "creds": "file:///etc/nats/ops.creds", "cert": "~/c.pem", "key": "/k.pem", "token": "", "description": "x"}`,
		"token": `{"url": "nats://n:4222", "token": "t0k3n", "some_future_field": "whatever"}`,
	})
	for name, want := range map[string]Settings{
		"prod":  {URL: "nats://prod-1:4222,nats://prod-2:4222", User: "ops", Password: "s3cret", TLSCA: filepath.Join(home, "ca.pem")},
		"files": {URL: "tls://n:4222", Creds: "/etc/nats/ops.creds", TLSCert: filepath.Join(home, "c.pem"), TLSKey: "/k.pem"},
		"token": {URL: "nats://n:4222", Token: "t0k3n"},
	} {
		c, err := LoadContext(name, env{"XDG_CONFIG_HOME": xdg, "HOME": home}.get)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if diff := cmp.Diff(want, c.Settings); diff != "" {
			t.Errorf("context %s (-want +got):\n%s", name, diff)
		}
		if c.Path != filepath.Join(xdg, "nats", "context", name+".json") {
			t.Errorf("context %s: path %s", name, c.Path)
		}
	}
}

func TestLoadContextRefusesWhatItCannotHonour(t *testing.T) {
	xdg := natsctxtest.WriteContexts(t, "gone", map[string]string{
		"nkey":   `{"url": "nats://n:4222", "nkey": "/home/ops/user.nk"}`,
		"domain": `{"url": "nats://n:4222", "jetstream_domain": "hub"}`,
		"first":  `{"url": "nats://n:4222", "tls_first": true}`,
		"nsc":    `{"url": "nats://n:4222", "creds": "nsc://op/acc/user"}`,
		"envuri": `{"creds": "env://NATS_CREDS_DATA"}`,
		"list":   `["url"]`,
		"number": `{"url": 4222}`,
	})
	for _, tc := range []struct{ name, want string }{
		{"nkey", `"nkey", which ikto does not support`},
		{"domain", `"jetstream_domain", which ikto does not support`},
		{"first", `"tls_first"`},
		{"nsc", "nsc:… , a credential URI"},
		{"envuri", "env:…"},
		{"list", "not a nats context"},
		{"number", `"url" must be a string`},
		{"missing", "missing.json does not exist"},
		{"../etc/passwd", "is not a context name"},
		{"", "nats context gone (selected in " + filepath.Join(xdg, "nats", "context.txt") + ")"},
	} {
		_, err := LoadContext(tc.name, env{"XDG_CONFIG_HOME": xdg}.get)
		want := strings.ReplaceAll(tc.want, " , ", ", ")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("context %q: error %v, want one containing %q", tc.name, err, want)
		}
	}
}

func TestResolvePrecedence(t *testing.T) {
	xdg := natsctxtest.WriteContexts(t, "prod", map[string]string{"prod": prodContext})
	flags := Settings{URL: "nats://flag:4222"}
	host := Settings{URL: "nats://host:4222", Creds: "/etc/ikto/host.creds", TLSCA: "/etc/ikto/ca.pem"}
	e := env{"XDG_CONFIG_HOME": xdg, "HOME": "/home/ops", "NATS_URL": "nats://env:4222", "NATS_CREDS": "/env.creds", "NATS_CA": "/env-ca.pem", "NATS_CERT": "/env-cert.pem", "NATS_KEY": "/env-key.pem"}
	got, err := Resolve(flags, host, "", e.get)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		URL:      "nats://flag:4222",     // flags
		Creds:    "/etc/ikto/host.creds", // -c over NATS_CREDS
		TLSCA:    "/etc/ikto/ca.pem",     // -c over NATS_CA and the context's ca
		TLSCert:  "/env-cert.pem",        // the environment
		TLSKey:   "/env-key.pem",
		User:     "ops", // the context
		Password: "s3cret",
	}
	if diff := cmp.Diff(want, got.Settings); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	if got.Context.Name != "prod" {
		t.Errorf("context %q, want prod", got.Context.Name)
	}

	// Without flags and with a host config that names no server, the
	// environment's URL beats the context's, and a password in the
	// environment beats the context's.
	e["NATS_PASSWORD"] = "from-env"
	got, err = Resolve(Settings{}, Settings{URL: "nats://"}, "", e.get)
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != "nats://env:4222" || got.Password != "from-env" || got.User != "ops" {
		t.Errorf("Resolve: url %q user %q password %q; want the environment's url and password, the context's user", got.URL, got.User, got.Password)
	}
}

func TestNATS(t *testing.T) {
	for _, tc := range []struct {
		in      Settings
		want    config.NATS
		wantErr string
	}{
		{in: Settings{URL: "nats://a:4222, nats://b:4222", User: "u", Password: "p", TLSCA: "/ca"},
			want: config.NATS{URLs: []string{"nats://a:4222", "nats://b:4222"}, User: "u", Password: "p", TLSCA: "/ca", Bucket: "mesh"}},
		{in: Settings{URL: "nats://", Token: "t"}, want: config.NATS{Token: "t", Bucket: "mesh"}},
		{in: Settings{User: "u"}, wantErr: "NATS user u has no password"},
		{in: Settings{Password: "p"}, wantErr: "no user"},
		{in: Settings{User: "u", Password: "p", Token: "t"}, wantErr: "both a NATS user and a token"},
		{in: Settings{TLSCert: "/c"}, wantErr: "needs its key"},
		{in: Settings{TLSKey: "/k"}, wantErr: "needs its key"},
	} {
		got, err := tc.in.NATS("mesh")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tc.in, diff)
		}
	}
}
