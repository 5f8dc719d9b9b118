// Package config reads, defaults and validates an ikto host's JSON configuration
// (docs/contract.md §2). The field names are those of ikto 0.3.0 and must not change; fields
// added since are optional and default when absent. Validation errors name the
// field that is wrong and, where there is one, the fix.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Defaults for fields that may be left out.
const (
	DefaultMeshCIDR       = "fd10::/16"
	DefaultSubnetPrefix   = 48
	DefaultDevName        = "wg-ikto"
	DefaultPort           = 51820
	DefaultBucket         = "ikto-mesh"
	DefaultMTU            = 1420
	DefaultResyncInterval = 30 * time.Second
)

// Config is one host's configuration file. The first eleven fields are what
// ikto-init prints; the rest are optional and omitted when empty.
type Config struct {
	Name             string `json:"name"`
	AdvertiseAddress string `json:"advertise_address"`
	PrivateAddress   string `json:"private_address"`
	SubnetPrefix     int    `json:"subnet_prefix"`
	MeshCIDR         string `json:"mesh_cidr"`
	WGDevName        string `json:"wg_dev_name"`
	WGPort           int    `json:"wg_port"`
	PrivateKeyPath   string `json:"private_key_path"`
	NATSCreds        string `json:"nats_creds"`
	NATSURL          string `json:"nats_url"`
	NATSKV           string `json:"nats_kv"`

	WGBackend           string `json:"wg_backend,omitempty"`
	WGMTU               int    `json:"wg_mtu,omitempty"`
	PersistentKeepalive int    `json:"persistent_keepalive,omitempty"`
	NATSTLSCA           string `json:"nats_tls_ca,omitempty"`
	NATSTLSCert         string `json:"nats_tls_cert,omitempty"`
	NATSTLSKey          string `json:"nats_tls_key,omitempty"`
	NATSKVReplicas      int    `json:"nats_kv_replicas,omitempty"`
	// NATSInboxPrefix replaces nats.go's "_INBOX" as the prefix of this
	// host's reply subjects: a host enrolled with ikto-admin enroll may
	// subscribe only under its own prefix, so no host reads another's replies.
	NATSInboxPrefix string `json:"nats_inbox_prefix,omitempty"`
	// ResyncInterval is a Go duration ("30s"): how often the agent re-reads the
	// device and repairs drift even when nothing changed in the bucket.
	ResyncInterval string       `json:"resync_interval,omitempty"`
	StateDir       string       `json:"state_dir,omitempty"`
	Hooks          []HookConfig `json:"hooks,omitempty"`
	// LogLevel is debug, info, warn or error; ikto-agent's --log-level,
	// when given, wins. SIGHUP applies a change.
	LogLevel string `json:"log_level,omitempty"`
	// MetricsListen is a TCP host:port where GET /metrics is also served
	// (the admin socket always serves it), e.g. "127.0.0.1:9474".
	MetricsListen string `json:"metrics_listen,omitempty"`
	// OperatorKeys are the Ed25519 public keys (base64, as ikto-admin
	// keygen prints them) whose signed commands — evict, prune, unrevoke,
	// revocations — this agent obeys. Without any, a plain delete marker or
	// revocation is a command, as in ikto 0.3.0.
	OperatorKeys []string `json:"operator_keys,omitempty"`
	// MembershipSignatures is "prefer" (the default: sign every record,
	// accept an unsigned one only for a key never seen signed) or
	// "require" (accept no unsigned record).
	MembershipSignatures string `json:"membership_signatures,omitempty"`
}

// HookConfig names one hook plugin (docs/contract.md §8). Config is handed to the hook as is.
type HookConfig struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// SHA256, when set, pins the executable: the agent refuses to start a
	// binary whose hex SHA-256 differs.
	SHA256 string `json:"sha256,omitempty"`
	// Timeout is a Go duration bounding each call into the hook (default 10s).
	Timeout string          `json:"timeout,omitempty"`
	Config  json.RawMessage `json:"config,omitempty"`
}

// DefaultHookTimeout bounds each call into a hook when its config gives none.
const DefaultHookTimeout = 10 * time.Second

// FieldError is a validation failure of one field.
type FieldError struct {
	Field string // JSON name of the field
	Msg   string // what is wrong and, where there is one, the fix
	Err   error  // the cause, if any (e.g. from reading a file the field names)
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap lets errors.Is see the cause, e.g. os.ErrNotExist for a missing file.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// maxConfigSize bounds what Parse reads.
const maxConfigSize = 1 << 20

// Load reads and parses the file at path, fills defaults, validates it and
// returns it resolved.
func Load(path string) (*Settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	s, err := c.Resolve()
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a configuration and fills defaults. Unknown fields are an error
// that names them. It does not validate; call Validate.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigSize {
		// Parsing a prefix of it would report a truncation that is not there.
		return nil, fmt.Errorf("larger than %d bytes; a host's config is a few kilobytes at most", maxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			line, col := position(data, syn.Offset)
			return nil, fmt.Errorf("not valid JSON at line %d, column %d: %w", line, col, err)
		case errors.As(err, &typ) && typ.Field == "":
			return nil, fmt.Errorf("must be a JSON object, not %s", typ.Value)
		case errors.As(err, &typ):
			line, col := position(data, typ.Offset)
			return nil, fieldErr(typ.Field, "must be a JSON %s, not %s (line %d, column %d)", typ.Type, typ.Value, line, col)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			quoted := strings.TrimPrefix(err.Error(), "json: unknown field ")
			name, uerr := strconv.Unquote(quoted)
			if uerr != nil || name == "" {
				return nil, fmt.Errorf("unknown field %s; remove it", quoted)
			}
			return nil, fieldErr(name, "unknown field; remove it or check its spelling")
		case errors.Is(err, io.EOF):
			return nil, errors.New("empty file; generate one with ikto-init")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("not valid JSON: it ends in the middle of a value (truncated file?)")
		}
		return nil, err
	}
	// Not dec.More(): it reports false for a stray '}' or ']'.
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, errors.New("trailing data after the JSON object")
	}
	c.SetDefaults()
	return &c, nil
}

// position is the line and column (both from 1), as an editor shows them, of
// the last byte the decoder read when it stopped: encoding/json's offsets
// count the bytes read, the offending one included.
func position(data []byte, offset int64) (line, col int) {
	i := int(min(max(offset-1, 0), int64(len(data))))
	before := data[:i]
	return bytes.Count(before, []byte("\n")) + 1, i - bytes.LastIndexByte(before, '\n')
}

// SetDefaults fills every field that is empty and has a default.
func (c *Config) SetDefaults() {
	if c.MeshCIDR == "" {
		c.MeshCIDR = DefaultMeshCIDR
	}
	if c.SubnetPrefix == 0 {
		c.SubnetPrefix = DefaultSubnetPrefix
	}
	if c.WGDevName == "" {
		c.WGDevName = DefaultDevName
	}
	if c.WGPort == 0 {
		c.WGPort = DefaultPort
	}
	if c.NATSKV == "" {
		c.NATSKV = DefaultBucket
	}
	if c.WGBackend == "" {
		c.WGBackend = string(wgdev.KindAuto)
	}
	if c.WGMTU == 0 {
		c.WGMTU = DefaultMTU
	}
}
