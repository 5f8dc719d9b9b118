package sdk_test

import (
	"context"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// logHook logs every change; a real hook would make the host match c.Peers.
type logHook struct{ node sdk.Node }

func (h *logHook) Configure(_ context.Context, n sdk.Node) error {
	h.node = n
	sdk.Logger().Info("configured", "device", n.Device, "mesh", n.Mesh.String())
	return nil
}

func (h *logHook) Apply(_ context.Context, c sdk.Change) error {
	for _, p := range c.Added {
		sdk.Logger().Info("peer added", "peer", p.Name, "prefix", p.Prefix.String())
	}
	return nil
}

func (h *logHook) Stop(context.Context) error { return nil }

// A hook's main is one call. (Run by hand it explains that it is a plugin.)
func Example() {
	sdk.Serve(&logHook{})
}
