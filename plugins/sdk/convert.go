package sdk

import (
	"fmt"
	"net/netip"

	"github.com/ikto-mesh/ikto/plugins/sdk/internal/hookv1"
)

// The wire carries addresses as canonical text; the zero AddrPort or Prefix
// travels as "" so that "unknown" survives the round trip.

func peerToProto(p Peer) *hookv1.Peer {
	out := &hookv1.Peer{Name: p.Name, PublicKey: p.PublicKey}
	if p.Endpoint.IsValid() {
		out.Endpoint = p.Endpoint.String()
	}
	if p.Prefix.IsValid() {
		out.Prefix = p.Prefix.String()
	}
	return out
}

func peerFromProto(in *hookv1.Peer) (Peer, error) {
	p := Peer{Name: in.GetName(), PublicKey: in.GetPublicKey()}
	var err error
	if s := in.GetEndpoint(); s != "" {
		if p.Endpoint, err = netip.ParseAddrPort(s); err != nil {
			return Peer{}, fmt.Errorf("peer %q endpoint: %w", p.Name, err)
		}
	}
	if s := in.GetPrefix(); s != "" {
		if p.Prefix, err = netip.ParsePrefix(s); err != nil {
			return Peer{}, fmt.Errorf("peer %q prefix: %w", p.Name, err)
		}
	}
	return p, nil
}

func peersToProto(ps []Peer) []*hookv1.Peer {
	if len(ps) == 0 {
		return nil
	}
	out := make([]*hookv1.Peer, len(ps))
	for i, p := range ps {
		out[i] = peerToProto(p)
	}
	return out
}

func peersFromProto(in []*hookv1.Peer) ([]Peer, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Peer, len(in))
	for i, pp := range in {
		p, err := peerFromProto(pp)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func nodeToProto(n Node) *hookv1.Node {
	out := &hookv1.Node{
		Self:         peerToProto(n.Self),
		Device:       n.Device,
		ListenPort:   uint32(n.ListenPort),
		Config:       n.Config,
		AgentVersion: n.AgentVersion,
	}
	if n.Mesh.IsValid() {
		out.Mesh = n.Mesh.String()
	}
	return out
}

func nodeFromProto(in *hookv1.Node) (Node, error) {
	self, err := peerFromProto(in.GetSelf())
	if err != nil {
		return Node{}, fmt.Errorf("self: %w", err)
	}
	n := Node{Self: self, Device: in.GetDevice(), ListenPort: int(in.GetListenPort()), AgentVersion: in.GetAgentVersion()}
	if s := in.GetMesh(); s != "" {
		if n.Mesh, err = netip.ParsePrefix(s); err != nil {
			return Node{}, fmt.Errorf("mesh: %w", err)
		}
	}
	// Absent config is nil, as documented on Node.Config, not an empty slice.
	if c := in.GetConfig(); len(c) > 0 {
		n.Config = c
	}
	return n, nil
}

func changeToProto(c Change) *hookv1.ApplyRequest {
	return &hookv1.ApplyRequest{
		Peers:   peersToProto(c.Peers),
		Added:   peersToProto(c.Added),
		Updated: peersToProto(c.Updated),
		Removed: peersToProto(c.Removed),
	}
}

func changeFromProto(in *hookv1.ApplyRequest) (Change, error) {
	var c Change
	lists := []struct {
		name string
		in   []*hookv1.Peer
		out  *[]Peer
	}{
		{"peers", in.GetPeers(), &c.Peers},
		{"added", in.GetAdded(), &c.Added},
		{"updated", in.GetUpdated(), &c.Updated},
		{"removed", in.GetRemoved(), &c.Removed},
	}
	for _, l := range lists {
		ps, err := peersFromProto(l.in)
		if err != nil {
			return Change{}, fmt.Errorf("%s: %w", l.name, err)
		}
		*l.out = ps
	}
	return c, nil
}
