// Package sdktest lets a hook author unit-test a hook without the agent: the
// hook is served in-process through the same go-plugin gRPC shims the agent
// uses, so what reaches the hook (and what its errors look like to the agent)
// is exactly what a real agent would see.
//
//	func TestApply(t *testing.T) {
//		c := sdktest.Serve(t, &myHook{})
//		if err := c.Configure(ctx, sdktest.Node(`{"table": 100}`)); err != nil { ... }
//		peers := sdktest.Peers(3)
//		if err := c.Apply(ctx, sdk.Diff(nil, peers)); err != nil { ... }
//	}
package sdktest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Serve serves h over a real gRPC connection inside the test process and
// returns the agent's side of it: calls on the returned Hook travel through
// the ikto.hook.v1 protocol to h. Both ends are closed by t.Cleanup.
func Serve(t testing.TB, h sdk.Hook) sdk.Hook {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, sdk.PluginSet(h))
	t.Cleanup(func() {
		// Server first: the client's Close asks the server to stop itself,
		// which would race with a Stop of our own.
		server.Stop()
		_ = client.Close()
	})
	c, err := sdk.Dispense(client)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	return c
}

// Node is a plausible node for tests: a host of the mesh fd10::/16 with the
// prefix fd10::/48, device "wg-ikto", port 51820, and config as the hook's
// raw JSON config ("" for none).
func Node(config string) sdk.Node {
	n := sdk.Node{
		Self:         Peer(0),
		Mesh:         netip.MustParsePrefix("fd10::/16"),
		Device:       "wg-ikto",
		ListenPort:   51820,
		AgentVersion: "test",
	}
	if config != "" {
		n.Config = json.RawMessage(config)
	}
	return n
}

// Peer is the i-th test host (0 ≤ i < 65536): prefix fd10:i::/48 (hex),
// endpoint 198.18.i/256.i%256:51820 inside the benchmarking range, a
// well-formed distinct public key.
func Peer(i int) sdk.Peer {
	if i < 0 || i > 0xffff {
		panic(fmt.Sprintf("sdktest.Peer(%d): out of range", i))
	}
	var key [32]byte
	key[0], key[1], key[31] = byte(i>>8), byte(i), 1
	return sdk.Peer{
		Name:      fmt.Sprintf("host-%d", i),
		PublicKey: base64.StdEncoding.EncodeToString(key[:]),
		Endpoint:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 51820),
		Prefix:    netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, byte(i >> 8), byte(i)}), 48),
	}
}

// Peers is Peer(1) … Peer(n), sorted by prefix (Peer(0) is Node's self).
func Peers(n int) []sdk.Peer {
	out := make([]sdk.Peer, n)
	for i := range out {
		out[i] = Peer(i + 1)
	}
	return out
}
