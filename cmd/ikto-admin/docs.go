package main

import (
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/natsctx"
)

// enableDocs gives the command the hidden --generate-docs DIR (man pages and
// shell completions for make package).
func enableDocs(root *cobra.Command) {
	cli.EnableDocs(root, cli.ExitStatus(), cli.ManSection{Title: "ENVIRONMENT", Body: natsctx.ManEnvironment})
}
