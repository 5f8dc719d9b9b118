// Package sdk is the only package an ikto hook author imports. A hook is a
// separate executable that ikto-agent starts through hashicorp/go-plugin and
// talks to over gRPC (protocol ikto.hook.v1, docs/contract.md §8). The hook implements
// Hook and its main is one call:
//
//	func main() { sdk.Serve(&myHook{}) }
//
// The agent first calls Configure with the node it runs on, then Apply after
// every change of the mesh with the full desired peer set and what changed
// since the hook's last successful Apply. A hook that fails, hangs past its
// timeout or exits is restarted and handed the full state again, so a hook
// should make its world match Change.Peers rather than trust the deltas alone.
//
// Hooks log through Logger (JSON on stderr, relayed into the agent's log) and
// must never write to stdout, which belongs to go-plugin's handshake.
package sdk

import (
	"context"
	"encoding/json"
	"net/netip"
)

// Hook is what a hook plugin implements. Calls never overlap: the agent makes
// one call at a time, each bounded by the hook's configured timeout.
type Hook interface {
	// Configure is called once after the hook starts, before any Apply, and
	// again if the node changes. An error makes the agent restart the hook.
	Configure(ctx context.Context, node Node) error
	// Apply makes the hook's world match change.Peers. It may be called
	// repeatedly with the same peers and must then change nothing.
	Apply(ctx context.Context, change Change) error
	// Stop is called when the agent stops for good (not when it restarts the
	// hook after a failure). A hook that installed something that should not
	// outlive the agent removes it here. The process is killed afterwards.
	Stop(ctx context.Context) error
}

// Node is the host the agent runs on.
type Node struct {
	// Self is this host's own record.
	Self Peer
	// Mesh is the mesh CIDR (mesh_cidr).
	Mesh netip.Prefix
	// Device is the WireGuard device's name (wg_dev_name).
	Device string
	// ListenPort is the WireGuard UDP port of this host (wg_port).
	ListenPort int
	// Config is the hook's own "config" object from the agent's config file,
	// as raw JSON (nil when absent). Decode it with json.Unmarshal.
	Config json.RawMessage
	// AgentVersion is the version of the ikto-agent that started the hook.
	AgentVersion string
}

// Peer is one other host of the mesh, as configured on the device.
type Peer struct {
	Name      string
	PublicKey string // base64 WireGuard public key
	// Endpoint is the peer's advertise_address:wg_port.
	Endpoint netip.AddrPort
	// Prefix is the peer's claimed prefix (its allowed-ips).
	Prefix netip.Prefix
}

// Change is one Apply: the full desired set and the difference from the
// last set this hook process applied successfully. After a (re)start the
// previous set is empty, so every peer is in Added.
type Change struct {
	// Peers is every peer the device carries now, sorted by prefix.
	Peers []Peer
	// Added, Updated and Removed are the difference; Removed holds the old
	// values of peers that are gone. Each is sorted by prefix.
	Added, Updated, Removed []Peer
}
