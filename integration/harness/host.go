package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/ikto-mesh/ikto/pkg/config"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Host is one machine of the mesh: a network namespace on the bridge, with
// everything an agent on it needs in Dir.
type Host struct {
	Name      string
	Namespace string
	// Addr is the underlay address (.N of the network's /24): the host's
	// advertise_address.
	Addr netip.Addr
	MAC  string
	// DevName is the WireGuard device name, unique on the machine because
	// wireguard-go's control sockets share /var/run/wireguard.
	DevName string
	// Dir holds the key, the config, the admin socket and the logs.
	Dir string
	// KeyPath is the private key file (mode 0600); PublicKey is its public half.
	KeyPath   string
	PublicKey wgtypes.Key
	// PrivateAddress is the host's random /48 of the mesh (its
	// private_address); tests may put another in a Config.
	PrivateAddress netip.Addr
	// SocketPath is the agent's admin socket.
	SocketPath string

	veth       string
	net        *Network
	starts     int
	lastConfig config.Config
}

func (h *Host) prepare(mesh netip.Prefix, unique func(bits int) (netip.Prefix, error)) error {
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return fmt.Errorf("host dir %s: %w", h.Dir, err)
	}
	h.KeyPath = filepath.Join(h.Dir, "private.key")
	key, err := config.CreatePrivateKey(h.KeyPath)
	if err != nil {
		return err
	}
	h.PublicKey = key.PublicKey()
	p, err := unique(config.DefaultSubnetPrefix)
	if err != nil {
		return err
	}
	h.PrivateAddress = p.Addr()
	h.SocketPath = filepath.Join(h.Dir, "agent.sock")
	return nil
}

// Prefix is PrivateAddress/48, the prefix the host claims by default.
func (h *Host) Prefix() netip.Prefix {
	return netip.PrefixFrom(h.PrivateAddress, config.DefaultSubnetPrefix)
}

// Config is a complete agent configuration for this host: the backend of
// TestBackend (userspace unless IKTO_TEST_WG_BACKEND says otherwise), a
// short resync interval, the network's mesh, and the given NATS
// server and bucket. Tests change fields before StartAgent.
func (h *Host) Config(natsURL, bucket string) config.Config {
	c := config.Config{
		Name:             h.Name,
		AdvertiseAddress: h.Addr.String(),
		PrivateAddress:   h.PrivateAddress.String(),
		SubnetPrefix:     config.DefaultSubnetPrefix,
		MeshCIDR:         h.net.Mesh.String(),
		WGDevName:        h.DevName,
		WGPort:           config.DefaultPort,
		PrivateKeyPath:   h.KeyPath,
		NATSURL:          natsURL,
		NATSKV:           bucket,
		WGBackend:        string(TestBackend()),
		ResyncInterval:   "2s",
	}
	return c
}

// WriteConfig writes cfg as the host's config file (mode 0600) and returns
// its path.
func (h *Host) WriteConfig(cfg config.Config) (string, error) {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode config of %s: %w", h.Name, err)
	}
	path := filepath.Join(h.Dir, "ikto.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("write config of %s: %w", h.Name, err)
	}
	return path, nil
}

// Exec runs a short command inside the host's namespace and returns its
// output. ctx bounds it.
func (h *Host) Exec(ctx context.Context, name string, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", h.Namespace, name}, args...)
	out, err := runContext(ctx, "ip", argv...)
	if err != nil {
		return out, fmt.Errorf("on %s: %w", h.Name, err)
	}
	return out, nil
}

var rtt = regexp.MustCompile(`time[=<]([0-9.]+) ?ms`)

// Ping sends one echo request from the host to addr, waiting at most a
// second, and returns the round-trip time.
func (h *Host) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	out, err := h.Exec(ctx, "ping", "-n", "-c1", "-W1", addr.String())
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	m := rtt.FindStringSubmatch(out)
	if m == nil {
		return 0, nil
	}
	ms, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// DialTCP checks that a TCP connection from inside the namespace to addr
// succeeds (bash's /dev/tcp, so nothing needs installing).
func (h *Host) DialTCP(ctx context.Context, addr netip.AddrPort) error {
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr.Addr(), addr.Port())
	if _, err := h.Exec(ctx, "bash", "-c", script); err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	return nil
}

// remove deletes the namespace (and with it the in-namespace veth end and any
// TUN device inside), then the root end if it survived, and a stale
// wireguard-go control socket.
func (h *Host) remove() error {
	var errs []error
	// Deleting the root end takes the pair down at once; the namespace would
	// take it too, but the kernel frees namespaces asynchronously.
	if linkExists(h.veth) {
		if _, err := ip("link", "del", h.veth); err != nil && linkExists(h.veth) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", h.veth, err))
		}
	}
	if netnsExists(h.Namespace) {
		if _, err := ip("netns", "del", h.Namespace); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", h.Namespace, err))
		}
	}
	if err := os.Remove(uapiSocket(h.DevName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove control socket of %s: %w", h.DevName, err))
	}
	return errors.Join(errs...)
}

// String is the host's name and underlay address, for messages.
func (h *Host) String() string {
	return h.Name + " (" + h.Addr.String() + ")"
}
