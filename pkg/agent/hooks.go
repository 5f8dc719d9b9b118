package agent

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/hook"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// newHookHost prepares (but does not start) the configured hooks.
func (a *Agent) newHookHost() *hook.Host {
	self := sdk.Peer{
		Name:      a.self.Name,
		PublicKey: a.self.PublicKey,
		Endpoint:  netip.AddrPortFrom(a.set.Advertise, uint16(a.set.Device.Port)),
		Prefix:    a.set.Prefix,
	}
	node := sdk.Node{
		Self:         self,
		Mesh:         a.set.Mesh,
		Device:       a.set.Device.Name,
		ListenPort:   a.set.Device.Port,
		AgentVersion: a.opt.Version,
	}
	return hook.New(a.set.Hooks, node, hook.Options{
		Log: a.log,
		Metrics: hook.Metrics{
			Failures: a.metrics.HookFailures,
			Restarts: a.metrics.HookRestarts,
			Up:       a.metrics.HookUp,
		},
	})
}

// hookPeers is the accepted set as hooks see it.
func hookPeers(peers map[wgtypes.Key]peer.Accepted) []sdk.Peer {
	out := make([]sdk.Peer, 0, len(peers))
	for _, p := range peers {
		out = append(out, sdk.Peer{Name: p.Name, PublicKey: p.PublicKey.String(), Endpoint: p.Endpoint, Prefix: p.Prefix})
	}
	return sdk.SortPeers(out)
}
