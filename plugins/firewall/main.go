// Command ikto-hook-firewall is ikto's firewall hook: started by ikto-agent
// (docs/contract.md §8), it keeps an nftables table (inet ikto) that lets only mesh
// members reach the WireGuard port and this host's prefix. See package
// filter for what it installs and why.
package main

import (
	"github.com/ikto-mesh/ikto/plugins/firewall/filter"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

func main() { sdk.Serve(filter.New(filter.WithLogger(sdk.Logger()))) }
