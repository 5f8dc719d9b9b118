package agent

import (
	"context"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// runHooks supervises the configured hook plugins until ctx ends.
// (Seam for the hook host; filled in by the hooks work.)
func (a *Agent) runHooks(ctx context.Context) error { return nil }

// notifyHooks hands the peers the device now carries to every hook. It never
// blocks the loop.
func (a *Agent) notifyHooks(view peer.View) {}
