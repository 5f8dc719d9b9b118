// Package state keeps an agent's snapshot of the last accepted mesh on local
// disk, so that an agent which (re)starts while no NATS server answers can put
// its device's peers back at once instead of cutting traffic until the control
// plane returns. A snapshot is bound to the device, public key, prefix and
// mesh rules it was written for; its records go through the bucket's
// acceptance rules again when it is read, so a damaged or tampered file is
// refused as a whole, never applied in part.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Version is the snapshot format this package writes and reads.
const Version = 1

// ErrMismatch means the snapshot is sound but was written for another device,
// key, prefix or mesh: it says nothing about this host's mesh.
var ErrMismatch = errors.New("snapshot is for another host configuration")

// ErrCorrupt means the snapshot cannot be trusted: it does not parse, or a
// record in it breaks the bucket's rules.
var ErrCorrupt = errors.New("snapshot is corrupt")

// Snapshot is the accepted peer records of a mesh as one agent last applied
// them, with what identifies that agent.
type Snapshot struct {
	Version      int       `json:"version"`
	Device       string    `json:"device"`
	PublicKey    string    `json:"public_key"`
	Prefix       string    `json:"prefix"`
	MeshCIDR     string    `json:"mesh_cidr"`
	SubnetPrefix int       `json:"subnet_prefix"`
	SavedAt      time.Time `json:"saved_at"`
	Records      []Record  `json:"records"`
}

// Record is one accepted bucket entry. The value is the record's JSON as is
// (readable in the file), so that reading it back runs the same rules as the
// watch does.
type Record struct {
	Key      string          `json:"key"`
	Revision uint64          `json:"revision"`
	Value    json.RawMessage `json:"value"`
}

// Identity is what a snapshot is bound to: one agent's device, key, claimed
// prefix and the rules its records were accepted under.
type Identity struct {
	Device    string
	PublicKey wgtypes.Key
	Prefix    netip.Prefix
	Rules     peer.Rules
}

// New makes the snapshot of peers (the accepted records of the other hosts)
// for id, its records in key order so that equal meshes give equal files.
func New(id Identity, peers []peer.Accepted, now time.Time) *Snapshot {
	s := &Snapshot{
		Version:      Version,
		Device:       id.Device,
		PublicKey:    id.PublicKey.String(),
		Prefix:       id.Prefix.String(),
		MeshCIDR:     id.Rules.Mesh.String(),
		SubnetPrefix: id.Rules.Bits,
		SavedAt:      now.UTC(),
		Records:      make([]Record, 0, len(peers)),
	}
	for _, p := range peers {
		s.Records = append(s.Records, Record{Key: p.Key, Revision: p.Revision, Value: p.Record.Encode()})
	}
	slices.SortFunc(s.Records, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
	return s
}

// Peers checks that the snapshot was written for id and returns its records
// as accepted peers, by public key. The error matches ErrMismatch when the
// snapshot belongs to another configuration and ErrCorrupt when any record
// fails the acceptance rules (docs/contract.md §4) or the snapshot holds this host's own
// record: a snapshot is trusted whole or not at all.
func (s *Snapshot) Peers(id Identity) (map[wgtypes.Key]peer.Accepted, error) {
	if err := s.matches(id); err != nil {
		return nil, err
	}
	table := peer.NewTable(id.Rules, id.PublicKey, id.Prefix)
	seen := make(map[string]bool, len(s.Records))
	writes := make([]peer.Write, 0, len(s.Records))
	for _, r := range s.Records {
		if !strings.HasPrefix(r.Key, peer.PeersPrefix) {
			return nil, fmt.Errorf("%w: key %q is not a peer record", ErrCorrupt, r.Key)
		}
		if seen[r.Key] {
			return nil, fmt.Errorf("%w: key %s appears twice", ErrCorrupt, r.Key)
		}
		seen[r.Key] = true
		writes = append(writes, peer.Write{Key: r.Key, Value: r.Value, Revision: r.Revision})
	}
	table.Load(writes) // every CPU verifies: the device waits for this
	view := table.Resolve()
	if len(view.Rejected) > 0 {
		rej := view.Rejected[0]
		return nil, fmt.Errorf("%w: record %s: %s: %s", ErrCorrupt, rej.Key, rej.Reason, rej.Detail)
	}
	if view.Self != nil {
		return nil, fmt.Errorf("%w: it holds this host's own record %s", ErrCorrupt, view.Self.Key)
	}
	if len(view.Peers) != len(s.Records) {
		return nil, fmt.Errorf("%w: %d records resolve to %d peers", ErrCorrupt, len(s.Records), len(view.Peers))
	}
	return view.Peers, nil
}

// matches says how the snapshot's binding differs from id, if it does.
func (s *Snapshot) matches(id Identity) error {
	if s.Version != Version {
		return fmt.Errorf("%w: format version %d, this agent reads %d", ErrCorrupt, s.Version, Version)
	}
	for _, c := range []struct{ what, got, want string }{
		{"device", s.Device, id.Device},
		{"public key", s.PublicKey, id.PublicKey.String()},
		{"prefix", s.Prefix, id.Prefix.String()},
		{"mesh_cidr", s.MeshCIDR, id.Rules.Mesh.String()},
		{"subnet_prefix", fmt.Sprint(s.SubnetPrefix), fmt.Sprint(id.Rules.Bits)},
	} {
		if c.got != c.want {
			return fmt.Errorf("%w: written for %s %s, this agent has %s", ErrMismatch, c.what, c.got, c.want)
		}
	}
	return nil
}
