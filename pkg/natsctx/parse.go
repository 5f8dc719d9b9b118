package natsctx

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// unsupported are the context fields ikto cannot honour, with what to use
// instead. A context that sets one is refused rather than half-used: a
// connection without the nkey or the JetStream domain the operator meant
// would fail later with a message that says nothing about the context.
var unsupported = map[string]string{
	"nkey":                   "use \"creds\" (a .creds file) or \"user\" and \"password\"",
	"nsc":                    "use \"creds\" with the file `nsc generate creds` writes",
	"user_jwt":               "use \"creds\" with the file `nsc generate creds` writes",
	"jetstream_domain":       "ikto uses the JetStream of the account it connects to",
	"jetstream_api_prefix":   "ikto uses the JetStream of the account it connects to",
	"jetstream_event_prefix": "ikto uses the JetStream of the account it connects to",
	"inbox_prefix":           "ikto uses the default inbox prefix",
	"tls_first":              "ikto starts TLS the usual way (after the server's INFO)",
	"socks_proxy":            "ikto connects directly",
	"windows_cert_store":     "use \"cert\", \"key\" and \"ca\" files",
	"windows_cert_match_by":  "use \"cert\", \"key\" and \"ca\" files",
	"windows_cert_match":     "use \"cert\", \"key\" and \"ca\" files",
	"windows_ca_certs_match": "use \"cert\", \"key\" and \"ca\" files",
}

// parseContext reads a context file's JSON. Fields ikto has no use for and
// that change nothing about the connection (description, color_scheme, and
// fields newer than this code) are ignored; every field is written by the
// nats CLI, so an empty value is an unset one.
func parseContext(data []byte, home string) (Settings, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return Settings{}, fmt.Errorf("not a nats context (JSON object): %w", err)
	}
	var s Settings
	for _, f := range []struct {
		name string
		dst  *string
		path bool
	}{
		{"url", &s.URL, false},
		{"creds", &s.Creds, true},
		{"user", &s.User, false},
		{"password", &s.Password, false},
		{"token", &s.Token, false},
		{"ca", &s.TLSCA, true},
		{"cert", &s.TLSCert, true},
		{"key", &s.TLSKey, true},
	} {
		raw, ok := fields[f.name]
		if !ok || string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return Settings{}, fmt.Errorf("%q must be a string", f.name)
		}
		if f.path {
			*f.dst = expandHome(*f.dst, home)
		}
	}
	var set []string
	for name, raw := range fields {
		if _, bad := unsupported[name]; bad && isSet(raw) {
			set = append(set, name)
		}
	}
	if len(set) > 0 {
		slices.Sort(set)
		return Settings{}, fmt.Errorf("it sets %q, which ikto does not support; %s", set[0], unsupported[set[0]])
	}
	creds, err := credsPath(s.Creds)
	if err != nil {
		return Settings{}, err
	}
	s.Creds = creds
	return s, nil
}

// isSet reports whether a JSON value is anything but empty: "", false, 0,
// null, {} and [] are how the nats CLI writes an unset field.
func isSet(raw json.RawMessage) bool {
	switch strings.TrimSpace(string(raw)) {
	case `""`, "false", "0", "null", "{}", "[]":
		return false
	}
	return true
}

// credsPath is the file a context's "creds" names. The nats CLI also takes
// credential URIs (nsc://, op://, env://, data:); ikto reads only files.
func credsPath(creds string) (string, error) {
	if p, ok := strings.CutPrefix(creds, "file://"); ok {
		return p, nil
	}
	if i := strings.Index(creds, ":"); i > 0 && !strings.ContainsAny(creds[:i], "/.") {
		return "", fmt.Errorf("\"creds\" is %s, a credential URI; ikto reads only .creds files: give the file's path (for nsc://, the file `nsc generate creds` writes)", creds[:i+1]+"…")
	}
	return creds, nil
}

// expandHome expands a leading "~/" as the nats CLI does.
func expandHome(path, home string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok && home != "" {
		return filepath.Join(home, rest)
	}
	return path
}
