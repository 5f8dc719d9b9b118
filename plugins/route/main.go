// Command ikto-hook-route is ikto's shipped route hook (docs/contract.md §8): it keeps
// one route per peer prefix through the WireGuard device in a chosen routing
// table, marked with its own route protocol number (default 73), and removes
// the routes of peers that leave and the stale ones an earlier run left. The
// agent starts it as a plugin; run by hand it only says so.
//
// Config keys (the hook's "config" object): table (default 254, main),
// metric (default: the kernel's), protocol (default 73).
package main

import (
	"os"

	"github.com/ikto-mesh/ikto/plugins/sdk"
	"github.com/vishvananda/netns"
)

func main() {
	if sdk.HandleVersion() {
		return
	}
	nl, err := openNetlink(netns.None())
	if err != nil {
		sdk.Logger().Error("cannot start the route hook", "err", err)
		os.Exit(1)
	}
	sdk.Serve(newRouteHook(sdk.Logger(), nl))
}
