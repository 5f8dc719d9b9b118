package agent

import (
	"context"
	"net/netip"

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
		Prefix:    a.prefix,
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

// runHooks supervises the configured hook plugins until ctx ends, then stops
// them (each gets the last state and Stop, and is killed after a grace
// period). A failing hook never ends it.
func (a *Agent) runHooks(ctx context.Context) error {
	return a.hooks.Run(ctx)
}

// notifyHooks hands the peers the device now carries to every hook. It never
// blocks the loop: each hook takes the newest set when it is ready.
func (a *Agent) notifyHooks(view peer.View) {
	if len(a.set.Hooks) == 0 {
		return
	}
	peers := make([]sdk.Peer, 0, len(view.Peers))
	for _, p := range view.Peers {
		peers = append(peers, sdk.Peer{Name: p.Name, PublicKey: p.PublicKey.String(), Endpoint: p.Endpoint, Prefix: p.Prefix})
	}
	a.hooks.Update(sdk.SortPeers(peers))
}
