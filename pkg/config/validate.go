package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

var (
	bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	// inboxPrefix is dot-separated tokens without wildcards, as nats.go and
	// a subscribe permission "<prefix>.>" both accept.
	inboxPrefix = regexp.MustCompile(`^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$`)
	devName     = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
)

// maxInboxPrefix bounds nats_inbox_prefix: it starts every reply subject.
const maxInboxPrefix = 128

// ValidInboxPrefix reports whether p can be a nats_inbox_prefix.
func ValidInboxPrefix(p string) bool { return inboxPrefix.MatchString(p) && len(p) <= maxInboxPrefix }

// ValidDevName reports whether name can be a WireGuard interface name.
func ValidDevName(name string) bool { return devName.MatchString(name) }

// ValidBucketName reports whether name can be a NATS KV bucket name.
func ValidBucketName(name string) bool { return bucketName.MatchString(name) }

// ValidNATSURL checks one server URL of nats_url.
func ValidNATSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a server URL (e.g. nats://host:4222)", raw)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return nil
	}
	return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", raw)
}

// Validate checks every field and returns the first problem as a *FieldError
// (wrapped with its cause where there is one). It reads the key, creds and TLS
// files named by the config, because a host whose files are wrong cannot start.
func (c *Config) Validate() error {
	_, err := c.Resolve()
	return err
}

// Resolve validates the config and returns it in typed form: the one place
// where its strings are parsed. Errors are those of Validate.
func (c *Config) Resolve() (*Settings, error) {
	s := &Settings{Name: c.Name, PrivateKeyPath: c.PrivateKeyPath, StateDir: c.StateDir}
	for _, check := range []func(*Settings) error{
		c.resolveAddressing, c.resolveDevice, c.validateKeyFile, c.resolveNATS,
		c.resolveAgentOptions, c.resolveHooks,
	} {
		if err := check(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c *Config) resolveAddressing(s *Settings) error {
	mesh, err := netip.ParsePrefix(c.MeshCIDR)
	if err != nil {
		return fieldErr("mesh_cidr", "%q is not a CIDR prefix (e.g. fd10::/16 or 100.64.0.0/10)", c.MeshCIDR)
	}
	if mesh.Masked() != mesh {
		return fieldErr("mesh_cidr", "%q has host bits set; use %s", c.MeshCIDR, mesh.Masked())
	}
	if mesh.Addr().Is4In6() {
		return fieldErr("mesh_cidr", "%q is an IPv4-mapped prefix; write it as plain IPv4", c.MeshCIDR)
	}
	if mesh.Bits() < 8 {
		return fieldErr("mesh_cidr", "%s is wider than /8 and would route most of the Internet into the mesh; use a private range such as fd10::/16 or 100.64.0.0/10", mesh)
	}
	max := mesh.Addr().BitLen()
	if c.SubnetPrefix <= mesh.Bits() || c.SubnetPrefix > max {
		return fieldErr("subnet_prefix", "%d must be longer than the mesh prefix /%d and at most /%d", c.SubnetPrefix, mesh.Bits(), max)
	}
	if c.PrivateAddress == "" {
		return fieldErr("private_address", "missing; generate a free one with ikto-init")
	}
	addr, err := netip.ParseAddr(c.PrivateAddress)
	if err != nil || addr.Zone() != "" {
		return fieldErr("private_address", "%q is not an IP address", c.PrivateAddress)
	}
	if !mesh.Contains(addr) {
		return fieldErr("private_address", "%s is outside mesh_cidr %s", addr, mesh)
	}
	if p := netip.PrefixFrom(addr, c.SubnetPrefix).Masked(); p.Addr() != addr {
		return fieldErr("private_address", "%s is not aligned to subnet_prefix /%d; use %s", addr, c.SubnetPrefix, p.Addr())
	}
	if c.AdvertiseAddress == "" {
		return fieldErr("advertise_address", "missing; set the underlay IP other hosts reach this one on")
	}
	adv, err := netip.ParseAddr(c.AdvertiseAddress)
	if err != nil || adv.Zone() != "" {
		return fieldErr("advertise_address", "%q is not an IP address", c.AdvertiseAddress)
	}
	if !peer.UsableUnicast(adv) {
		return fieldErr("advertise_address", "%s is not a usable unicast address (unspecified, loopback, multicast, broadcast or IPv6 link-local)", adv)
	}
	if mesh.Contains(adv.Unmap()) {
		return fieldErr("advertise_address", "%s is inside mesh_cidr %s; set the underlay IP other hosts reach this one on, not a mesh address", adv, mesh)
	}
	s.Mesh = mesh
	s.Prefix = netip.PrefixFrom(addr, c.SubnetPrefix)
	s.Advertise = adv.Unmap()
	s.Device.Address = netip.PrefixFrom(addr, mesh.Bits())
	return nil
}

func (c *Config) resolveDevice(s *Settings) error {
	if !devName.MatchString(c.WGDevName) {
		return fieldErr("wg_dev_name", "%q is not a valid interface name (1-15 letters, digits, '_', '.', '-')", c.WGDevName)
	}
	if c.WGPort < 1 || c.WGPort > 65535 {
		return fieldErr("wg_port", "%d is not a UDP port (1-65535)", c.WGPort)
	}
	kind, err := wgdev.ParseKind(c.WGBackend)
	if err != nil {
		return fieldErr("wg_backend", "%v", err)
	}
	minMTU := 576
	if s.Mesh.Addr().Is6() {
		minMTU = 1280
	}
	if c.WGMTU < minMTU || c.WGMTU > 65535 {
		return fieldErr("wg_mtu", "%d is out of range (%d-65535)", c.WGMTU, minMTU)
	}
	if c.PersistentKeepalive < 0 || c.PersistentKeepalive > 65535 {
		return fieldErr("persistent_keepalive", "%d is out of range (0-65535 seconds, 0 = off)", c.PersistentKeepalive)
	}
	s.Device.Name, s.Device.Port, s.Device.MTU, s.Device.Backend = c.WGDevName, c.WGPort, c.WGMTU, kind
	s.Keepalive = time.Duration(c.PersistentKeepalive) * time.Second
	return nil
}

func (c *Config) validateKeyFile(*Settings) error {
	if c.PrivateKeyPath == "" {
		return fieldErr("private_key_path", "missing; create a key with ikto-init --private-key-path FILE")
	}
	if _, err := LoadPrivateKey(c.PrivateKeyPath); err != nil {
		return &FieldError{Field: "private_key_path", Msg: err.Error(), Err: err}
	}
	return nil
}

func (c *Config) resolveNATS(s *Settings) error {
	urls := SplitURLs(c.NATSURL)
	if len(urls) == 0 {
		return fieldErr("nats_url", "missing; set the NATS server URL(s), e.g. nats://nats.example:4222")
	}
	for _, raw := range urls {
		if err := ValidNATSURL(raw); err != nil {
			return &FieldError{Field: "nats_url", Msg: err.Error()}
		}
	}
	if !bucketName.MatchString(c.NATSKV) {
		return fieldErr("nats_kv", "%q is not a valid bucket name (letters, digits, '_', '-')", c.NATSKV)
	}
	if err := c.validateNATSFiles(); err != nil {
		return err
	}
	if c.NATSKVReplicas < 0 || c.NATSKVReplicas > 5 {
		return fieldErr("nats_kv_replicas", "%d is out of range (1-5, or 0 for the default of 1)", c.NATSKVReplicas)
	}
	if c.NATSInboxPrefix != "" && !ValidInboxPrefix(c.NATSInboxPrefix) {
		return fieldErr("nats_inbox_prefix", "%q is not a NATS subject prefix (dot-separated letters, digits, '_', '-', at most %d characters); use the value ikto-admin enroll wrote", c.NATSInboxPrefix, maxInboxPrefix)
	}
	s.NATS = NATS{
		URLs: urls, Creds: c.NATSCreds, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
		Bucket: c.NATSKV, Replicas: max(c.NATSKVReplicas, 1), InboxPrefix: c.NATSInboxPrefix,
	}
	return nil
}

func (c *Config) resolveAgentOptions(s *Settings) error {
	s.Resync = DefaultResyncInterval
	if c.ResyncInterval != "" {
		d, err := time.ParseDuration(c.ResyncInterval)
		if err != nil || d < 100*time.Millisecond {
			return fieldErr("resync_interval", "%q must be a duration of at least 100ms, e.g. \"30s\"", c.ResyncInterval)
		}
		s.Resync = d
	}
	if c.StateDir != "" && !strings.HasPrefix(c.StateDir, "/") {
		return fieldErr("state_dir", "%q must be an absolute path", c.StateDir)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
		s.LogLevel = c.LogLevel
	default:
		return fieldErr("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.MetricsListen != "" {
		ap, err := netip.ParseAddrPort(c.MetricsListen)
		if err != nil || ap.Port() == 0 {
			return fieldErr("metrics_listen", "%q must be an IP address and port, e.g. \"127.0.0.1:9474\" or \"[::]:9474\"", c.MetricsListen)
		}
		s.MetricsListen = ap.String()
	}
	for i, k := range c.OperatorKeys {
		op, err := peer.ParseOperatorKey(k)
		if err != nil {
			return fieldErr(fmt.Sprintf("operator_keys[%d]", i), "%v", err)
		}
		s.Operators = append(s.Operators, op)
	}
	switch c.MembershipSignatures {
	case "", "prefer":
	case "require":
		s.RequireSigned = true
	default:
		return fieldErr("membership_signatures", "%q is not prefer or require", c.MembershipSignatures)
	}
	return nil
}

func (c *Config) resolveHooks(s *Settings) error {
	seen := map[string]bool{}
	for i, h := range c.Hooks {
		field := fmt.Sprintf("hooks[%d]", i)
		if h.Name == "" {
			return fieldErr(field+".name", "missing; give every hook a unique name")
		}
		if seen[h.Name] {
			return fieldErr(field+".name", "%q is used by another hook", h.Name)
		}
		seen[h.Name] = true
		if !strings.HasPrefix(h.Path, "/") {
			return fieldErr(field+".path", "%q must be an absolute path to the hook executable", h.Path)
		}
		hook := Hook{Name: h.Name, Path: h.Path, Timeout: DefaultHookTimeout, Config: h.Config}
		if h.SHA256 != "" {
			b, err := hex.DecodeString(h.SHA256)
			if err != nil || len(b) != sha256.Size {
				return fieldErr(field+".sha256", "%q must be 64 hex digits, e.g. the first word of `sha256sum %s`", h.SHA256, h.Path)
			}
			hook.SHA256 = b
		}
		if h.Timeout != "" {
			d, err := time.ParseDuration(h.Timeout)
			if err != nil || d < 10*time.Millisecond {
				return fieldErr(field+".timeout", "%q must be a duration of at least 10ms, e.g. \"10s\"", h.Timeout)
			}
			hook.Timeout = d
		}
		if len(h.Config) > 0 && !json.Valid(h.Config) {
			return fieldErr(field+".config", "must be a JSON value")
		}
		s.Hooks = append(s.Hooks, hook)
	}
	// The files last, once every field is known to be well formed.
	for i, h := range s.Hooks {
		if err := checkHookPath(h.Path, os.Geteuid()); err != nil {
			return &FieldError{Field: fmt.Sprintf("hooks[%d].path", i), Msg: err.Error(), Err: err}
		}
	}
	return nil
}

// SplitURLs splits a nats_url value into its servers. The bare "nats://"
// that ikto-init prints when it was given no URL counts as none.
func SplitURLs(natsURL string) []string {
	var out []string
	for _, u := range strings.Split(natsURL, ",") {
		u = strings.TrimSpace(u)
		if u != "" && !strings.HasSuffix(u, "://") {
			out = append(out, u)
		}
	}
	if len(out) == 0 && strings.TrimSpace(natsURL) != "" {
		// Keep a lone "nats://" so validation can say what is wrong with it.
		return []string{strings.TrimSpace(natsURL)}
	}
	return out
}

// RedactURLs joins urls with any password in them masked; a lone user part is
// a token and is masked too.
func RedactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = raw
		if u, err := url.Parse(raw); err == nil {
			if _, hasPassword := u.User.Password(); u.User != nil && !hasPassword {
				u.User = url.User("xxxxx")
			}
			out[i] = u.Redacted()
		}
	}
	return strings.Join(out, ",")
}
