package main

import (
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
)

// enableDocs gives the command the hidden --generate-docs DIR (man page and
// shell completions for make package).
func enableDocs(cmd *cobra.Command) {
	cli.EnableDocs(cmd, cli.ExitStatus(), cli.ManSection{Title: "ENVIRONMENT", Body: natsctx.ManEnvironment + `

ikto-init uses these settings to skip prefixes already claimed in the bucket. Of them, only the server URLs go into the configuration it prints (when **--nats-url** is not given): credentials and TLS files there are the host's, given with **--nats-creds** and **--nats-tls-***, never the operator's.`})
}
