// Package api is the agent's local admin API (docs/contract.md §7): HTTP/1.1 on a unix
// socket, root's and, read-only, its group's (mode 0660; 0600 without a
// group), a handler map of reads (GET /v1/status, GET /metrics), and the
// client ikto-admin uses. The JSON types here are a contract: ikto-admin
// status -o json prints them as they are.
package api

import (
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Status is the body of GET /v1/status.
type Status struct {
	Self peer.Record `json:"self"`
	// Address is this host's address in the mesh (private_address).
	Address string `json:"address,omitempty"`
	// Instance is the random id this agent process drew at start, in
	// every heartbeat it writes.
	Instance string     `json:"instance,omitempty"`
	Backend  wgdev.Kind `json:"backend"`
	Device   string     `json:"device"`
	NATS     NATSStatus `json:"nats"`
	// State is where the agent stands: "waiting for NATS", "restored from
	// snapshot", "synced" or "standing down".
	State string `json:"state"`
	// Claim is the state of this host's own record: "held", "missing"
	// (being written back), "contested" (being restored over another
	// value), "lost" (another key kept winning) or "evicted".
	Claim string `json:"claim,omitempty"`
	// Synced is set while the device follows the bucket.
	Synced        bool         `json:"synced"`
	LastReconcile *time.Time   `json:"last_reconcile,omitempty"`
	Peers         []PeerStatus `json:"peers"`
	Rejected      []Rejected   `json:"rejected"`
	// Duplicate is another live agent running with this host's key, while
	// one is seen: a cloned host, or one config on two hosts.
	Duplicate *Duplicate `json:"duplicate,omitempty"`
}

// Duplicate is another agent writing this host's heartbeat with its key:
// its instance id, address as its NATS server sees it, name and version,
// as its heartbeat gives them, since when it has been seen, and what to
// do.
type Duplicate struct {
	Instance string    `json:"instance"`
	Addr     string    `json:"addr,omitempty"`
	Name     string    `json:"name,omitempty"`
	Version  string    `json:"version,omitempty"`
	Since    time.Time `json:"since"`
	Fix      string    `json:"fix"`
}

// NATSStatus is the agent's connection to the control plane.
type NATSStatus struct {
	Connected bool   `json:"connected"`
	Server    string `json:"server,omitempty"`
	// URL is nats_url, passwords masked; LastError the connection's last
	// error (why it is disconnected, when it is).
	URL       string `json:"url,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Bucket    string `json:"bucket"`
	// Problems are what is wrong with the bucket's settings, each naming
	// its fix (a bucket that allows rollups): empty when none.
	Problems []string `json:"problems,omitempty"`
}

// PeerStatus is one peer: its record fields (docs/contract.md §4 names) and what the
// device reports. Record is empty for a peer on the device that no accepted
// record asks for (it is about to be removed).
type PeerStatus struct {
	peer.Record
	Endpoint        string     `json:"endpoint"`
	AllowedIPs      []string   `json:"allowed_ips"`
	LatestHandshake *time.Time `json:"latest_handshake"`
	// Handshake is "established" (a session from a handshake within the
	// last 3 minutes), "pending" (the agent is orchestrating the first
	// handshake, since PendingSince) or "stale" (no session).
	Handshake    string     `json:"handshake"`
	PendingSince *time.Time `json:"pending_since,omitempty"`
	RxBytes      int64      `json:"rx_bytes"`
	TxBytes      int64      `json:"tx_bytes"`
}

// Rejected is a record the agent refuses to apply.
type Rejected struct {
	Key      string `json:"key"`
	Revision uint64 `json:"revision"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail"`
}
