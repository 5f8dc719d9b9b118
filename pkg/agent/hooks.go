package agent

import (
	"context"
	"net/netip"
	"sync"

	"github.com/ikto-mesh/ikto/pkg/hook"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// hookHosts holds each running Agent's hook host. Stopgap until Agent has a
// `hooks *hook.Host` field set in newAgent (agent.go is not this file's to
// change): runHooks and notifyHooks start concurrently, and both need the
// same host, whichever comes first.
var hookHosts sync.Map // *Agent → *hook.Host

func (a *Agent) hookHost() *hook.Host {
	if h, ok := hookHosts.Load(a); ok {
		return h.(*hook.Host)
	}
	h, _ := hookHosts.LoadOrStore(a, a.newHookHost())
	return h.(*hook.Host)
}

// newHookHost prepares (but does not start) the configured hooks.
func (a *Agent) newHookHost() *hook.Host {
	self := sdk.Peer{
		Name:      a.self.Name,
		PublicKey: a.self.PublicKey,
		Endpoint:  netip.AddrPortFrom(a.cfg.Advertise(), uint16(a.cfg.WGPort)),
		Prefix:    a.prefix,
	}
	node := sdk.Node{
		Self:         self,
		Mesh:         a.cfg.Mesh(),
		Device:       a.cfg.WGDevName,
		ListenPort:   a.cfg.WGPort,
		AgentVersion: a.opt.Version,
	}
	return hook.New(a.cfg.Hooks, node, hook.Options{
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
	defer hookHosts.Delete(a)
	return a.hookHost().Run(ctx)
}

// notifyHooks hands the peers the device now carries to every hook. It never
// blocks the loop: each hook takes the newest set when it is ready.
func (a *Agent) notifyHooks(view peer.View) {
	if len(a.cfg.Hooks) == 0 {
		return
	}
	peers := make([]sdk.Peer, 0, len(view.Peers))
	for _, p := range view.Peers {
		peers = append(peers, sdk.Peer{Name: p.Name, PublicKey: p.PublicKey.String(), Endpoint: p.Endpoint, Prefix: p.Prefix})
	}
	a.hookHost().Update(sdk.SortPeers(peers))
}
