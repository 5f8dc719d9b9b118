// Command ikto-admin will be the operator tool (list, evict, status; SPEC §2).
// Until it is built it says so instead of pretending.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/ikto-mesh/ikto/pkg/cli"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "--version" {
		fmt.Fprintln(stdout, cli.VersionString("ikto-admin"))
		return cli.ExitOK
	}
	fmt.Fprintln(stderr, "ikto-admin: not built yet: list, evict and status arrive with the operator issue.\n"+
		"Meanwhile: `curl --unix-socket /tmp/ikto.sock http://ikto/v1/status` shows an agent's view,\n"+
		"and `nats kv ls ikto-mesh` lists the bucket's keys.")
	return cli.ExitError
}
