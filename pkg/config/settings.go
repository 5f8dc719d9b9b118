package config

import (
	"crypto/ed25519"
	"encoding/json"
	"net/netip"
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Settings is a host's configuration after Resolve: every value parsed and
// checked once, in the types the rest of ikto takes. Nothing downstream
// parses a config string again.
type Settings struct {
	// Name is the host's name in its record; empty means the hostname.
	Name string
	// Advertise is the underlay address other hosts send WireGuard to.
	Advertise netip.Addr
	// Prefix is the claim: private_address/subnet_prefix.
	Prefix netip.Prefix
	// Mesh is mesh_cidr.
	Mesh           netip.Prefix
	Device         Device
	PrivateKeyPath string
	// Keepalive is persistent_keepalive; 0 is off.
	Keepalive time.Duration
	NATS      NATS
	// Resync is how often the device is re-read and drift repaired.
	Resync time.Duration
	// StateDir holds the mesh snapshot; empty means none is kept.
	StateDir string
	Hooks    []Hook
	// LogLevel is the configured log level; empty means the default.
	LogLevel string
	// MetricsListen is a TCP address serving /metrics; empty means none.
	MetricsListen string
	// Operators are operator_keys; RequireSigned is membership_signatures
	// "require".
	Operators     []ed25519.PublicKey
	RequireSigned bool
}

// Rules are the acceptance rules every record of this mesh is checked against.
func (s *Settings) Rules() peer.Rules {
	return peer.Rules{Mesh: s.Mesh, Bits: s.Prefix.Bits(), Bucket: s.NATS.Bucket, Operators: s.Operators, Require: s.RequireSigned}
}

// Device is the WireGuard interface's own settings.
type Device struct {
	Name    string
	Port    int
	MTU     int
	Backend wgdev.Kind
	// Address is private_address with the mesh's prefix length, so the
	// kernel routes the whole mesh into the device.
	Address netip.Prefix
}

// NATS is how to reach the servers and which bucket holds the mesh. The
// agent, ikto-admin and ikto-init all connect from one of these.
type NATS struct {
	URLs            []string
	Creds           string // a .creds file; empty means none
	User, Password  string // or Token: ikto-admin and ikto-init take them from the
	Token           string // environment or a nats context; a host's config has neither
	TLSCA           string
	TLSCert, TLSKey string
	Bucket          string
	// Replicas is used only when the bucket is created (at least 1).
	Replicas int
	// InboxPrefix is the prefix of reply subjects; empty means nats.go's
	// "_INBOX".
	InboxPrefix string
}

// Redacted is the server list for logs and messages, passwords masked.
func (n NATS) Redacted() string { return RedactURLs(n.URLs) }

// Hook is one hook plugin, resolved.
type Hook struct {
	Name string
	Path string
	// SHA256 pins the executable; nil means not pinned.
	SHA256 []byte
	// Timeout bounds each call into the hook.
	Timeout time.Duration
	// Config is handed to the hook as it is.
	Config json.RawMessage
}
