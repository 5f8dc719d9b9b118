// Package natsctx settles how ikto-admin and ikto-init reach NATS the way
// the nats CLI does, so that an operator who uses `nats` needs no new habits:
// command-line flags win over a host's config (-c), which wins over the
// environment (NATS_URL, NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN,
// NATS_CA, NATS_CERT, NATS_KEY), which wins over a nats CLI context (named
// with --context or NATS_CONTEXT, else the one `nats context select` chose).
// Each setting is taken from the first source that sets it. A password or
// token never has to be typed on a command line: the environment or a
// context carries it. The result is a config.NATS, which bucket.Dial turns
// into a connection like every other in ikto.
package natsctx

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ikto-mesh/ikto/pkg/config"
)

// Settings are NATS connection settings as one source gives them; an empty
// field is one the source does not set.
type Settings struct {
	URL      string // one or more server URLs, comma-separated
	Creds    string // a NATS credentials (.creds) file
	User     string
	Password string
	Token    string
	TLSCA    string // PEM file of the CA that signed the servers' certificates
	TLSCert  string // client certificate for TLS authentication, with TLSKey
	TLSKey   string
}

// Environment variables, as the nats CLI reads them.
const (
	EnvURL      = "NATS_URL"
	EnvCreds    = "NATS_CREDS"
	EnvUser     = "NATS_USER"
	EnvPassword = "NATS_PASSWORD"
	EnvToken    = "NATS_TOKEN"
	EnvCA       = "NATS_CA"
	EnvCert     = "NATS_CERT"
	EnvKey      = "NATS_KEY"
	EnvContext  = "NATS_CONTEXT"
)

// Vars are every environment variable this package reads.
var Vars = []string{EnvURL, EnvCreds, EnvUser, EnvPassword, EnvToken, EnvCA, EnvCert, EnvKey, EnvContext}

// FromEnv is the settings of the environment that getenv reads.
func FromEnv(getenv func(string) string) Settings {
	return Settings{
		URL:      getenv(EnvURL),
		Creds:    getenv(EnvCreds),
		User:     getenv(EnvUser),
		Password: getenv(EnvPassword),
		Token:    getenv(EnvToken),
		TLSCA:    getenv(EnvCA),
		TLSCert:  getenv(EnvCert),
		TLSKey:   getenv(EnvKey),
	}
}

// Merge returns, setting by setting, the first value that layers set;
// layers come highest precedence first. A URL without servers (the bare
// "nats://" of a host config made without one) sets nothing.
func Merge(layers ...Settings) Settings {
	var m Settings
	for _, l := range layers {
		if m.URL == "" && len(l.URLs()) > 0 {
			m.URL = l.URL
		}
		for _, f := range []struct{ dst, src *string }{
			{&m.Creds, &l.Creds}, {&m.User, &l.User}, {&m.Password, &l.Password},
			{&m.Token, &l.Token}, {&m.TLSCA, &l.TLSCA}, {&m.TLSCert, &l.TLSCert}, {&m.TLSKey, &l.TLSKey},
		} {
			if *f.dst == "" {
				*f.dst = *f.src
			}
		}
	}
	return m
}

// Resolved is the outcome of Resolve: the settings, and the context they
// drew on, if any (for messages: "from nats context prod").
type Resolved struct {
	Settings
	Context Context
}

// Resolve merges the sources in the nats CLI's order: flags, then the host's
// config, then the environment, then the nats context — contextName if
// given (--context), else $NATS_CONTEXT, else the selected one. Flags and
// config hold only what the user set there. getenv is os.Getenv outside
// tests.
func Resolve(flags, hostConfig Settings, contextName string, getenv func(string) string) (Resolved, error) {
	ctx, err := LoadContext(contextName, getenv)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Settings: Merge(flags, hostConfig, FromEnv(getenv), ctx.Settings), Context: ctx}, nil
}

// URLs is URL split into its servers (none when unset or the bare
// "nats://" placeholder that ikto-init prints).
func (s Settings) URLs() []string {
	urls := config.SplitURLs(s.URL)
	if len(urls) == 1 && strings.HasSuffix(urls[0], "://") {
		return nil
	}
	return urls
}

// NATS is the connection to bucket that s describes, for bucket.Dial. It
// refuses combinations that cannot authenticate, naming the variables and
// context fields to fix.
func (s Settings) NATS(bucket string) (config.NATS, error) {
	if err := s.check(); err != nil {
		return config.NATS{}, err
	}
	return config.NATS{
		URLs: s.URLs(), Creds: s.Creds, User: s.User, Password: s.Password, Token: s.Token,
		TLSCA: s.TLSCA, TLSCert: s.TLSCert, TLSKey: s.TLSKey, Bucket: bucket,
	}, nil
}

func (s Settings) check() error {
	switch {
	case s.User != "" && s.Password == "":
		return errors.New("NATS user " + s.User + " has no password: set NATS_PASSWORD or the context's \"password\"")
	case s.User == "" && s.Password != "":
		return errors.New("a NATS password is set but no user: set NATS_USER or the context's \"user\"")
	case s.User != "" && s.Token != "":
		return errors.New("both a NATS user and a token are set: unset one (NATS_USER or NATS_TOKEN, or the context's \"user\" or \"token\")")
	case (s.TLSCert == "") != (s.TLSKey == ""):
		return fmt.Errorf("a TLS client certificate needs its key, and a key its certificate (cert %q, key %q): set both", s.TLSCert, s.TLSKey)
	}
	return nil
}

// ManEnvironment is the ENVIRONMENT section of the man pages of the
// commands that resolve their NATS settings here (markdown).
const ManEnvironment = `NATS settings come, each on its own, from the first of: the command-line flags; the host configuration given with **-c** (ikto-admin); the environment; a **nats**(1) CLI context.

**NATS_URL**, **NATS_CREDS**, **NATS_USER**, **NATS_PASSWORD**, **NATS_TOKEN**, **NATS_CA**, **NATS_CERT**, **NATS_KEY** as for the nats CLI: server URLs (comma-separated), a credentials file, a user and password or a token (so that no secret is typed on the command line), and TLS files.

**NATS_CONTEXT** names the nats context to use (**--context** wins over it); without either, the one chosen with **nats context select**. Contexts are read from *$XDG_CONFIG_HOME/nats/context/NAME.json* (default *~/.config/nats/context/*). ikto uses their url, creds, user, password, token, ca, cert and key, and refuses a context that sets nkey, nsc, user_jwt, a JetStream domain or prefix, an inbox prefix, tls_first, a SOCKS proxy or a Windows certificate store.`
