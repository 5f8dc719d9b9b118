package main

import (
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

// enableDocs gives the command the hidden --generate-docs DIR (man pages and
// shell completions for make package).
func enableDocs(root *cobra.Command) {
	cli.EnableDocs(root, cli.ExitStatus())
}
