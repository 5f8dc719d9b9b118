package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
)

// natsFlags are the NATS settings ikto-admin takes besides --nats-url and
// --nats-creds: a nats CLI context and TLS files, and what all the sources
// together resolve to (package natsctx).
type natsFlags struct {
	context                string
	tlsCA, tlsCert, tlsKey string
	resolved               natsctx.Resolved
}

func (n *natsFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&n.context, "context", "", "take NATS settings from this nats CLI `context` (default: $NATS_CONTEXT, else the selected one)")
	f.StringVar(&n.tlsCA, "tls-ca", "", "CA certificate `file` of the NATS servers (default: nats_tls_ca of -c, $NATS_CA, the context's ca)")
	f.StringVar(&n.tlsCert, "tls-cert", "", "client certificate `file` for NATS, with --tls-key (default: nats_tls_cert of -c, $NATS_CERT, the context's cert)")
	f.StringVar(&n.tlsKey, "tls-key", "", "client key `file` for NATS (default: nats_tls_key of -c, $NATS_KEY, the context's key)")
}

// resolveNATS settles the NATS settings as the nats CLI would: flags, then
// -c, then the environment, then the nats context. It leaves them where
// openMesh reads them, and in natsSettings.
func (a *app) resolveNATS(cmd *cobra.Command) error {
	flags := natsctx.Settings{TLSCA: a.natsOpts.tlsCA, TLSCert: a.natsOpts.tlsCert, TLSKey: a.natsOpts.tlsKey}
	if cmd.Flags().Changed("nats-url") {
		flags.URL = a.natsURL
	}
	if cmd.Flags().Changed("nats-creds") {
		flags.Creds = a.natsCreds
	}
	var host natsctx.Settings
	if c := a.cfg; c != nil {
		host = natsctx.Settings{URL: c.NATSURL, Creds: c.NATSCreds, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey}
	}
	r, err := natsctx.Resolve(flags, host, a.natsOpts.context, os.Getenv)
	if err != nil {
		return err
	}
	if _, err := r.NATS(a.natsKV); err != nil {
		return err
	}
	a.natsOpts.resolved = r
	a.natsURL, a.natsCreds = r.URL, r.Creds
	a.tlsCA, a.tlsCert, a.tlsKey = r.TLSCA, r.TLSCert, r.TLSKey
	return nil
}

// natsSettings is the connection to the mesh's bucket, with the user and
// password or token that the environment or a context may add.
func (a *app) natsSettings() (config.NATS, error) {
	return a.natsOpts.resolved.NATS(a.natsKV)
}
