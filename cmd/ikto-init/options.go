package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// hostOptions are the flags for the config's optional fields and for how
// ikto-init itself reaches NATS, beside the 0.3.0 flags of bindFlags.
type hostOptions struct {
	flags   *pflag.FlagSet
	context string
	// lookup is how ikto-init reaches NATS to skip claimed prefixes.
	lookup natsctx.Resolved
}

func (o *options) bindHostFlags(fs *pflag.FlagSet) {
	o.host.flags = fs
	c := &o.cfg
	fs.StringVar(&c.StateDir, "state-dir", "", "state_dir: where the agent keeps its snapshot of the mesh (absolute path; default none)")
	fs.StringVar(&c.WGBackend, "wg-backend", "", "wg_backend: auto, kernel or userspace (default auto)")
	fs.IntVar(&c.PersistentKeepalive, "persistent-keepalive", 0, "persistent_keepalive in seconds (default 0, off)")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", "", "nats_tls_ca: CA certificate `file` of the NATS servers")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "nats_tls_cert: the host's client certificate `file`, with --nats-tls-key")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "nats_tls_key: the host's client key `file`")
	fs.StringVar(&o.host.context, "context", "", "look up claimed prefixes with this nats CLI `context` (default: $NATS_CONTEXT, else the selected one)")
}

// validateHost checks the optional fields' flags.
func (o *options) validateHost() error {
	c := &o.cfg
	if c.StateDir != "" && !strings.HasPrefix(c.StateDir, "/") {
		return usagef("--state-dir %q must be an absolute path", c.StateDir)
	}
	if _, err := wgdev.ParseKind(c.WGBackend); err != nil {
		return usagef("--wg-backend %v", err)
	}
	if c.PersistentKeepalive < 0 || c.PersistentKeepalive > 65535 {
		return usagef("--persistent-keepalive %d is out of range (0-65535 seconds, 0 = off)", c.PersistentKeepalive)
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return usagef("--nats-tls-cert and --nats-tls-key go together")
	}
	return nil
}

// resolveNATS settles how ikto-init reaches NATS, as the nats CLI would:
// flags, then the environment, then the nats context. Only the servers of
// the environment or context go into the printed config, when --nats-url
// did not name them: the servers are the mesh's, while the credentials and
// TLS files there are the operator's, not the host's.
func (o *options) resolveNATS() error {
	c := &o.cfg
	flags := natsctx.Settings{Creds: c.NATSCreds, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey}
	if o.host.flags.Changed("nats-url") {
		flags.URL = c.NATSURL
	}
	r, err := natsctx.Resolve(flags, natsctx.Settings{}, o.host.context, os.Getenv)
	if err != nil {
		return err
	}
	o.host.lookup = r
	if flags.URL != "" || len(r.URLs()) == 0 {
		return nil
	}
	for _, raw := range r.URLs() {
		if err := config.ValidNATSURL(raw); err != nil {
			return fmt.Errorf("the NATS URL of %s: %w", urlSource(r), err)
		}
	}
	c.NATSURL = strings.Join(r.URLs(), ",")
	return nil
}

// urlSource names where a URL that no flag gave came from.
func urlSource(r natsctx.Resolved) string {
	if os.Getenv(natsctx.EnvURL) != "" {
		return natsctx.EnvURL
	}
	return "nats context " + r.Context.Name + " (" + r.Context.Path + ")"
}
