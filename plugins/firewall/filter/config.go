package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Names of what the hook installs, stable so that operators and tests can
// look them up (nft list table inet ikto).
const (
	DefaultTable = "ikto"

	SetEndpoints4 = "peer_endpoints_v4"
	SetEndpoints6 = "peer_endpoints_v6"
	SetPrefixes   = "peer_prefixes"

	CounterWGPortDrops = "wg_port_drops"
	CounterPrefixDrops = "prefix_drops"

	ChainInput   = "input"
	ChainForward = "forward"
)

// maxTableName is NFT_NAME_MAXLEN less the terminating NUL.
const maxTableName = 255

// Config is the hook's "config" object in the agent's configuration file.
// Every field is optional.
type Config struct {
	// Table is the name of the inet table the hook owns (default "ikto").
	// Two agents on one host, one per mesh, need two names.
	Table string `json:"table"`
}

// decodeConfig reads the hook's config object; unknown fields are an error
// that names them, as in the agent's own configuration.
func decodeConfig(raw json.RawMessage) (Config, error) {
	cfg := Config{Table: DefaultTable}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return Config{}, fmt.Errorf("firewall hook config: %w", err)
	}
	switch {
	case cfg.Table == "":
		return Config{}, errors.New(`firewall hook config: "table" is empty (leave it out for the default "ikto")`)
	case len(cfg.Table) > maxTableName:
		return Config{}, fmt.Errorf(`firewall hook config: "table" is %d bytes long, nftables allows %d`, len(cfg.Table), maxTableName)
	}
	return cfg, nil
}

// ruleset is everything the table's shape depends on: it changes only
// when the node or the hook's config does.
type ruleset struct {
	table  string
	device string
	port   uint16
	self   netip.Prefix // this host's prefix, whose inbound traffic is guarded
}

// newRuleset validates the node the agent handed over.
func newRuleset(node sdk.Node, cfg Config) (ruleset, error) {
	switch {
	case node.Device == "":
		return ruleset{}, errors.New("firewall hook: node has no WireGuard device name (wg_dev_name)")
	case len(node.Device) >= ifNameSize:
		return ruleset{}, fmt.Errorf("firewall hook: device name %q is longer than %d bytes (wg_dev_name)", node.Device, ifNameSize-1)
	case node.ListenPort < 1 || node.ListenPort > 65535:
		return ruleset{}, fmt.Errorf("firewall hook: WireGuard port %d is not in 1-65535 (wg_port)", node.ListenPort)
	case !node.Self.Prefix.IsValid():
		return ruleset{}, errors.New("firewall hook: node has no prefix of its own (private_address/subnet_prefix)")
	}
	return ruleset{
		table:  cfg.Table,
		device: node.Device,
		port:   uint16(node.ListenPort),
		self:   node.Self.Prefix.Masked(),
	}, nil
}

func (r ruleset) nftTable() *nftables.Table {
	return &nftables.Table{Name: r.table, Family: nftables.TableFamilyINet}
}

// meshIs4 tells which family the mesh prefixes are; the prefix set and the
// prefix rules exist only for it.
func (r ruleset) meshIs4() bool { return r.self.Addr().Is4() }

// setSpec describes one of the table's sets.
type setSpec struct {
	name     string
	keyType  nftables.SetDatatype
	interval bool
}

// sets lists the table's sets, in the order they are created.
func (r ruleset) sets() []setSpec {
	prefixType := nftables.TypeIP6Addr
	if r.meshIs4() {
		prefixType = nftables.TypeIPAddr
	}
	return []setSpec{
		{name: SetEndpoints4, keyType: nftables.TypeIPAddr},
		{name: SetEndpoints6, keyType: nftables.TypeIP6Addr},
		{name: SetPrefixes, keyType: prefixType, interval: true},
	}
}

func (s setSpec) nftSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: s.name, KeyType: s.keyType, Interval: s.interval}
}

// matches tells whether a set found in the kernel is one this spec can
// update in place.
func (s setSpec) matches(got *nftables.Set) bool {
	return got.KeyType.Bytes == s.keyType.Bytes &&
		got.KeyType.GetNFTMagic() == s.keyType.GetNFTMagic() &&
		got.Interval == s.interval && !got.IsMap && !got.Constant
}
