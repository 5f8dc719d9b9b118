// Command ikto-hook-exec is ikto's shipped exec hook (docs/contract.md §8), the way to
// write a custom hook without Go: after each change of the mesh it runs a
// configured command with the node and the change as JSON on its standard
// input, bounded by a timeout, and logs its exit status and the end of its
// output. The agent starts it as a plugin; run by hand it only says so.
//
// Config keys (the hook's "config" object): command (an argv array, or a
// string run by /bin/sh -c; required), timeout (a Go duration, default 10s).
package main

import "github.com/ikto-mesh/ikto/plugins/sdk"

func main() { sdk.Serve(newExecHook(sdk.Logger())) }
