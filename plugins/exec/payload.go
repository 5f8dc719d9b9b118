package main

import (
	"encoding/json"
	"fmt"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// payloadVersion is raised only when a field changes meaning or goes away;
// new fields may appear under the same version, so readers ignore fields
// they do not know (as with the bucket's records).
const payloadVersion = 1

// payload is what the command reads on standard input: the node and the
// change, with peer fields named as in the bucket's records (docs/contract.md §4).
type payload struct {
	Version int      `json:"payload_version"`
	Node    nodeJSON `json:"node"`
	// Peers is every peer the device carries now; Added, Updated and
	// Removed are the difference since the hook's last successful run
	// (after a restart every peer is in Added). Never null.
	Peers   []peerJSON `json:"peers"`
	Added   []peerJSON `json:"added"`
	Updated []peerJSON `json:"updated"`
	Removed []peerJSON `json:"removed"`
}

// peerJSON is one host: its record fields, plus endpoint as host:port
// (IPv6 in brackets) ready for tools that take one.
type peerJSON struct {
	Name             string `json:"name"`
	PublicKey        string `json:"public_key"`
	AdvertiseAddress string `json:"advertise_address"`
	WGPort           int    `json:"wg_port"`
	AllowedIP        string `json:"allowed_ip"`
	Endpoint         string `json:"endpoint"`
}

// nodeJSON is this host: its own record and the config fields a script is
// likely to need, named as in ikto.json.
type nodeJSON struct {
	peerJSON
	MeshCIDR     string `json:"mesh_cidr"`
	WGDevName    string `json:"wg_dev_name"`
	AgentVersion string `json:"agent_version"`
}

func peerToJSON(p sdk.Peer) peerJSON {
	out := peerJSON{Name: p.Name, PublicKey: p.PublicKey}
	if p.Endpoint.IsValid() {
		out.AdvertiseAddress = p.Endpoint.Addr().String()
		out.WGPort = int(p.Endpoint.Port())
		out.Endpoint = p.Endpoint.String()
	}
	if p.Prefix.IsValid() {
		out.AllowedIP = p.Prefix.String()
	}
	return out
}

func peersToJSON(ps []sdk.Peer) []peerJSON {
	out := make([]peerJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, peerToJSON(p))
	}
	return out
}

// encodePayload is the JSON document for one run.
func encodePayload(node sdk.Node, c sdk.Change) ([]byte, error) {
	self := peerToJSON(node.Self)
	if node.ListenPort != 0 {
		self.WGPort = node.ListenPort
	}
	p := payload{
		Version: payloadVersion,
		Node:    nodeJSON{peerJSON: self, WGDevName: node.Device, AgentVersion: node.AgentVersion},
		Peers:   peersToJSON(c.Peers),
		Added:   peersToJSON(c.Added),
		Updated: peersToJSON(c.Updated),
		Removed: peersToJSON(c.Removed),
	}
	if node.Mesh.IsValid() {
		p.Node.MeshCIDR = node.Mesh.String()
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return append(b, '\n'), nil
}
