package sdk

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/ikto-mesh/ikto/plugins/sdk/internal/hookv1"
)

// ProtocolVersion is the go-plugin protocol version of ikto.hook.v1. An agent
// and a hook built against different versions refuse each other at start-up
// with a message naming both, instead of misreading each other's calls.
const ProtocolVersion = 1

// PluginName is the name the hook is dispensed under.
const PluginName = "hook"

// Handshake is shared by the agent and every hook. The cookie is not a
// secret: it only stops a hook binary run by hand from waiting for a host
// that will never come, and tells the user what the binary is.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "IKTO_HOOK_PLUGIN",
	MagicCookieValue: "8c1e5a4f-ikto-hook-v1-2b7d9e03c6f1",
}

// HookPlugin is the go-plugin glue for a Hook, gRPC only. On the plugin side
// Impl is the hook being served; on the agent side Impl is unused and
// Dispense yields a Hook that makes gRPC calls.
type HookPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Hook
}

var _ plugin.GRPCPlugin = (*HookPlugin)(nil)

// GRPCServer registers the hook's gRPC service in the plugin process.
func (p *HookPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	hookv1.RegisterHookServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns the agent's view of the hook: a Hook whose calls go over
// conn.
func (p *HookPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &grpcClient{rpc: hookv1.NewHookClient(conn)}, nil
}

// PluginSet is the plugin map both sides hand go-plugin. impl is nil on the
// agent's side.
func PluginSet(impl Hook) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &HookPlugin{Impl: impl}}
}

// ClientConfig is the go-plugin client configuration the agent starts the
// hook executable cmd with: the handshake, the plugin map and gRPC as the only
// protocol. The caller adds logging, SecureConfig, timeouts and environment.
func ClientConfig(cmd *exec.Cmd) *plugin.ClientConfig {
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginSet(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
	}
}

// Dispense returns the Hook served by a started plugin client, whose calls
// are gRPC calls into the plugin process.
func Dispense(c plugin.ClientProtocol) (Hook, error) {
	raw, err := c.Dispense(PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense %s: %w", PluginName, err)
	}
	h, ok := raw.(Hook)
	if !ok {
		return nil, fmt.Errorf("dispense %s: got %T, not a Hook", PluginName, raw)
	}
	return h, nil
}
