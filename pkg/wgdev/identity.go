package wgdev

import (
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Identity is the part of a Device every backend answers from memory: the
// interface name, the backend and the public key. Backends embed it; their
// SetPrivateKey calls SetPublicKey once the device has taken the new key.
type Identity struct {
	name string
	kind Kind

	mu  sync.Mutex // guards pub, which a key rotation changes
	pub wgtypes.Key
}

// NewIdentity is the identity of the interface name of backend kind with
// public key pub.
func NewIdentity(name string, kind Kind, pub wgtypes.Key) *Identity {
	return &Identity{name: name, kind: kind, pub: pub}
}

// Name is the interface name.
func (id *Identity) Name() string { return id.name }

// Backend is the kind of device.
func (id *Identity) Backend() Kind { return id.kind }

// PublicKey is the device's public key.
func (id *Identity) PublicKey() wgtypes.Key {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.pub
}

// SetPublicKey records the public key of the private key the device now
// has.
func (id *Identity) SetPublicKey(pub wgtypes.Key) {
	id.mu.Lock()
	id.pub = pub
	id.mu.Unlock()
}
