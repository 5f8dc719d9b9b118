package main

import (
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

// enableDocs gives the command the hidden --generate-docs DIR (man page and
// shell completions for make package), with what an operator of the daemon
// looks up in its man page: the exit codes systemd acts on and the files.
func enableDocs(cmd *cobra.Command) {
	cli.EnableDocs(cmd,
		cli.ExitStatus(
			"**3** the address (prefix) is held by another public key in the bucket; restarting cannot fix it",
			"**4** this host was evicted or its key revoked; move the key file away and run **ikto-init**(1) again for a new key and prefix",
		),
		cli.ManSection{Title: "SIGNALS", Body: `**SIGINT**, **SIGTERM** stop the agent; the claim stays in the bucket and a kernel device keeps its peers, so a restart does not cut traffic.

**SIGHUP** re-reads the configuration and applies what can change at run time (log level, hooks, resync interval, keepalive); the agent logs the fields that need a restart. It never stops the agent.`},
		cli.ManSection{Title: "FILES", Body: `*/etc/ikto/ikto.json* the configuration (**ikto-agent.service**); *ikto-agent@NAME.service* runs one agent per mesh with */etc/ikto/NAME.json* and the socket */run/ikto/NAME.sock*

*/run/ikto/ikto.sock* the admin socket that **ikto-admin status** reads

*/usr/lib/ikto/* the shipped hook plugins`},
	)
}
