// Package wgdev is the boundary between ikto and a WireGuard device. Device is
// the small interface the agent drives; kernel/ (netlink + wgctrl), userspace/
// (embedded wireguard-go) and fake/ (in memory, for unit tests and
// control-plane benchmarks) implement it, and backend/ picks one for a config.
package wgdev

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Kind names a backend: what wg_backend asks for (auto, kernel, userspace)
// and what Device.Backend reports (kernel, external, userspace, fake). It is
// the one list of backend names; config, backend selection and status use it.
type Kind string

// The backends.
const (
	KindAuto      Kind = "auto" // the kernel module when it is there, else userspace
	KindKernel    Kind = "kernel"
	KindUserspace Kind = "userspace" // the embedded wireguard-go, which lives and dies with the agent
	// KindExternal is a userspace device run by another process (an
	// external wireguard-go) and adopted through its UAPI socket. It is
	// never asked for by name: wg_backend auto and userspace adopt one that
	// is there.
	KindExternal Kind = "external"
	KindFake     Kind = "fake" // in memory, tests and benchmarks only
)

// ParseKind reads a wg_backend value; "" is KindAuto. Only the kinds a
// config may ask for are accepted (not fake).
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case "":
		return KindAuto, nil
	case KindAuto, KindKernel, KindUserspace:
		return k, nil
	}
	return "", fmt.Errorf("%q is not one of %s, %s, %s", s, KindAuto, KindKernel, KindUserspace)
}

// ErrNotSupported is returned when a backend cannot run on this machine (for
// the kernel backend: no wireguard module).
var ErrNotSupported = errors.New("wireguard backend not supported here")

// RefusalReporter is a Device that says which handshake messages it
// refused. WireGuard refuses an initiation from a peer it does not have
// (yet) without an answer, and the sender sends no other for 5 s: a refusal
// from a peer this host is about to take tells the first contact (mesh)
// that the other end took this host first and is waiting. It refuses an
// answer to an initiation it no longer waits for: after the two ends'
// initiations crossed, each end refuses the other's answer — and the peer
// that sent it had taken this end's initiation, so it waits for no answer
// of its own.
type RefusalReporter interface {
	// RefusedHandshakes delivers each refused initiation and answer. A
	// report that finds the channel full is dropped.
	RefusedHandshakes() <-chan Refusal
}

// Refusal is one refused handshake message: the UDP source it came from,
// when, and whether it was an answer (a handshake response) rather than an
// initiation.
type Refusal struct {
	From   netip.AddrPort
	At     time.Time
	Answer bool
}

// Config is the device's own side: what Open makes sure of before any peer is
// configured.
type Config struct {
	Name       string       // interface name, at most 15 bytes
	PrivateKey wgtypes.Key  // the host's key
	ListenPort int          // UDP port
	Address    netip.Prefix // private_address with the mesh prefix length
	MTU        int
	// TUN is the TUN interface an embedded device runs on when the process
	// before this one left it (systemd's fd store keeps it across a
	// restart): its link, address and routes never went away. nil: the
	// device makes its own. Open takes it over, also when it fails.
	TUN *os.File
}

// Device is one WireGuard interface.
//
// Open (in each backend) creates the interface or adopts an existing one of the
// same name without touching its peers, sets key, port, address and MTU, and
// brings it up; so opening again after an agent restart does not cut traffic.
// All methods are safe for concurrent use.
type Device interface {
	// Name is the interface name.
	Name() string
	// Backend is KindKernel, KindExternal, KindUserspace or KindFake.
	Backend() Kind
	// PublicKey is the device's public key.
	PublicKey() wgtypes.Key
	// Peers reports the live peers, with handshake time and byte counters.
	Peers() ([]wgtypes.Peer, error)
	// ConfigurePeers applies every change in one call. Changes are deltas: a
	// PeerConfig with Remove drops that peer, any other adds or updates it (with
	// ReplaceAllowedIPs when its allowed-ips are given). Peers not named are left
	// alone. An empty slice is a no-op and must not touch the device.
	ConfigurePeers(changes []wgtypes.PeerConfig) error
	// SetPrivateKey replaces the device's private key (a key rotation):
	// its peers stay, sessions made with the old key end.
	SetPrivateKey(k wgtypes.Key) error
	// Close releases the handle. A kernel or external device stays up with
	// its peers (an agent restart must not cut traffic); an embedded
	// userspace device lives in this process and goes down with it. Close is
	// idempotent; after it, Peers and ConfigurePeers fail with net.ErrClosed.
	Close() error
}
