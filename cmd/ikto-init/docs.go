package main

import (
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

// enableDocs gives the command the hidden --generate-docs DIR (man page and
// shell completions for make package).
func enableDocs(cmd *cobra.Command) {
	cli.EnableDocs(cmd, cli.ExitStatus())
}
