// Command ikto-init prints a new ikto configuration for one host (docs/contract.md §2): the
// eleven fields of ikto 0.3.0 with a random private_address inside the mesh. When
// given a NATS server it skips prefixes already claimed in the bucket, and it can
// create the host's WireGuard private key file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// usagef is a wrong flag, value or argument: exit code 2.
var usagef = cli.Usagef

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// options are the command line: the configuration to print plus what to do
// with it.
type options struct {
	cfg    config.Config
	output string
	force  bool
	// template prints a config with the fields the agent needs left empty,
	// for filling in by hand; without it, a missing one is an error.
	template bool
	host     hostOptions // options.go: the optional fields, and NATS for the look-up
}

// run is the whole program; rnd is the source of the random prefix (nil means
// crypto/rand) so that tests can predict the draws. It returns the exit code.
func run(args []string, stdout, stderr io.Writer, rnd io.Reader) int {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "ikto-init [flags]",
		Short: "Print a new ikto configuration for this host",
		Long: `ikto-init prints a new ikto configuration for one host, with a random
private_address inside the mesh. With --nats-url it skips addresses already
claimed in the bucket; with --private-key-path it creates the key file if it
does not exist (an existing key is never overwritten).

  ikto-init --name host-a --advertise-address 192.0.2.10 \
    --private-key-path /etc/ikto/wg.key --nats-url nats://nats:4222 > ikto.json`,
		Version:       cli.VersionString("ikto-init"),
		Args:          noArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("name") {
				o.cfg.Name = hostName()
			}
			return o.run(cmd.Context(), stdout, stderr, rnd)
		},
	}
	cmd.SetVersionTemplate("{{.Version}}\n")
	enableDocs(cmd)
	o.bindFlags(cmd.Flags())
	return cli.Execute(cmd, args, stdout, stderr, nil)
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: ikto-init takes only flags", args[0])
	}
	return nil
}

func (o *options) bindFlags(fs *pflag.FlagSet) {
	// 0.3.0 spelled two flags differently; both spellings keep working.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "mesh-ip-net":
			name = "mesh-cidr"
		case "subnet-prefix-length":
			name = "subnet-prefix"
		}
		return pflag.NormalizedName(name)
	})
	c := &o.cfg
	fs.StringVarP(&c.MeshCIDR, "mesh-cidr", "m", config.DefaultMeshCIDR, "the mesh prefix every host's subnet is drawn from (alias --mesh-ip-net)")
	fs.IntVarP(&c.SubnetPrefix, "subnet-prefix", "p", config.DefaultSubnetPrefix, "length of each host's subnet, e.g. 24 in an IPv4 mesh (alias --subnet-prefix-length)")
	fs.StringVar(&c.Name, "name", "", "the host's name in the mesh, shown by ikto-admin list and in errors (default: this machine's host name)")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", "", "the underlay IP other hosts reach this one on")
	fs.StringVar(&c.WGDevName, "wg-dev-name", config.DefaultDevName, "WireGuard interface name")
	fs.IntVar(&c.WGPort, "wg-port", config.DefaultPort, "WireGuard UDP port")
	fs.StringVar(&c.PrivateKeyPath, "private-key-path", "", "WireGuard private key file; created (mode 0600) if it does not exist")
	fs.StringVar(&c.NATSURL, "nats-url", "nats://", "NATS server URL(s), comma-separated; when set, claimed prefixes are skipped")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file")
	fs.StringVar(&c.NATSKV, "nats-kv", config.DefaultBucket, "NATS KV bucket holding the mesh")
	fs.StringVarP(&o.output, "output", "o", "", "write the configuration to `FILE` (mode 0600) instead of stdout")
	fs.BoolVar(&o.force, "force", false, "with -o, overwrite an existing file")
	fs.BoolVar(&o.template, "template", false, "print the config even without --advertise-address, --private-key-path or --nats-url, to fill in by hand")
	o.bindHostFlags(fs)
}

// validate checks what can be checked before the host exists: the addressing
// plan, the names and the port. It returns the parsed mesh.
func (o *options) validate() (netip.Prefix, error) {
	c := &o.cfg
	mesh, err := netip.ParsePrefix(c.MeshCIDR)
	if err != nil {
		return mesh, usagef("--mesh-cidr %q is not a CIDR prefix (e.g. fd10::/16 or 100.64.0.0/10)", c.MeshCIDR)
	}
	if mesh.Masked() != mesh {
		return mesh, usagef("--mesh-cidr %s has host bits set; use %s", mesh, mesh.Masked())
	}
	if mesh.Addr().Is4In6() {
		return mesh, usagef("--mesh-cidr %s is an IPv4-mapped prefix; write it as plain IPv4", mesh)
	}
	if max := mesh.Addr().BitLen(); c.SubnetPrefix <= mesh.Bits() || c.SubnetPrefix > max {
		hint := ""
		if mesh.Addr().Is4() {
			hint = " (an IPv4 mesh needs one, e.g. -p 24)"
		}
		return mesh, usagef("--subnet-prefix %d must be longer than the mesh prefix /%d and at most /%d%s", c.SubnetPrefix, mesh.Bits(), max, hint)
	}
	if c.AdvertiseAddress != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddress)
		if err != nil || a.Zone() != "" || !peer.UsableUnicast(a) {
			return mesh, usagef("--advertise-address %q is not a usable unicast IP address", c.AdvertiseAddress)
		}
	}
	if !config.ValidDevName(c.WGDevName) {
		return mesh, usagef("--wg-dev-name %q is not a valid interface name (1-15 letters, digits, '_', '.', '-')", c.WGDevName)
	}
	if c.WGPort < 1 || c.WGPort > 65535 {
		return mesh, usagef("--wg-port %d is not a UDP port (1-65535)", c.WGPort)
	}
	if !config.ValidBucketName(c.NATSKV) {
		return mesh, usagef("--nats-kv %q is not a valid bucket name (letters, digits, '_', '-')", c.NATSKV)
	}
	for _, raw := range o.natsServers() {
		if err := config.ValidNATSURL(raw); err != nil {
			return mesh, usagef("--nats-url %v", err)
		}
	}
	return mesh, o.validateHost()
}

// missing are the flags of the fields the agent cannot start without that
// were not given (the NATS servers may also come from a nats context or
// $NATS_URL).
func (o *options) missing() []string {
	var out []string
	if o.cfg.AdvertiseAddress == "" {
		out = append(out, "--advertise-address")
	}
	if o.cfg.PrivateKeyPath == "" {
		out = append(out, "--private-key-path")
	}
	if len(o.natsServers()) == 0 {
		out = append(out, "--nats-url")
	}
	return out
}

// natsServers are the servers to check the draw against: none for the bare
// "nats://" placeholder that is printed when no URL was given.
func (o *options) natsServers() []string {
	urls := config.SplitURLs(o.cfg.NATSURL)
	if len(urls) == 1 && strings.HasSuffix(urls[0], "://") {
		return nil
	}
	return urls
}

func (o *options) run(ctx context.Context, stdout, stderr io.Writer, rnd io.Reader) error {
	mesh, err := o.validate()
	if err != nil {
		return err
	}
	if err := o.resolveNATS(); err != nil {
		return err
	}
	if missing := o.missing(); len(missing) > 0 && !o.template {
		return usagef("%s missing: the agent refuses a config without them; pass them, e.g. ikto-init --advertise-address 192.0.2.10 --private-key-path /etc/ikto/wg.key --nats-url nats://nats.example:4222 -o /etc/ikto/ikto.json (or --template to print one to fill in by hand)",
			strings.Join(missing, ", "))
	}
	// A credentials file the agent cannot read stops it at start: say so
	// now, not after the config is written.
	if creds := o.cfg.NATSCreds; creds != "" && !o.template {
		f, err := os.Open(creds)
		if err != nil {
			return usagef("--nats-creds %s: %v; give the .creds file ikto-admin enroll wrote for this host (or --template to print a config to fill in by hand)", creds, err)
		}
		f.Close()
	}
	// Refuse early, before drawing or creating a key for a file we will not write.
	if o.output != "" && !o.force {
		if _, err := os.Lstat(o.output); err == nil {
			return fmt.Errorf("-o %s: file exists; pass --force to overwrite it", o.output)
		}
	}

	prefix, err := o.drawPrefix(ctx, mesh, rnd, stderr)
	if err != nil {
		return err
	}
	o.cfg.PrivateAddress = prefix.Addr().String()

	if err := o.ensureKey(stderr); err != nil {
		return err
	}
	if err := o.checkKeyNotRevoked(ctx); err != nil {
		return err
	}

	out, err := json.MarshalIndent(&o.cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode configuration: %w", err)
	}
	out = append(out, '\n')
	if o.output == "" {
		_, err := stdout.Write(out)
		return err
	}
	return writeFile(o.output, out, o.force)
}

// ensureKey creates the private key file if it is named and missing. An
// existing file is left alone, with a warning if the agent would refuse it.
func (o *options) ensureKey(stderr io.Writer) error {
	path := o.cfg.PrivateKeyPath
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		if _, err := config.LoadPrivateKey(path); err != nil {
			fmt.Fprintf(stderr, "ikto-init: warning: kept the existing %s, but the agent will refuse it: %v\n", path, err)
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--private-key-path %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("--private-key-path: %w", err)
	}
	k, err := config.CreatePrivateKey(path)
	if errors.Is(err, config.ErrKeyExists) {
		return nil // created by someone else since the Lstat: still never overwrite
	}
	if err != nil {
		return fmt.Errorf("--private-key-path: %w", err)
	}
	fmt.Fprintf(stderr, "ikto-init: created private key %s (public key %s)\n", path, k.PublicKey())
	return nil
}

// writeFile writes the configuration to -o with mode 0600. Without force it
// never replaces a file (the early check above can race); with force it
// replaces the file atomically (config.WriteSecretFile).
func writeFile(path string, data []byte, force bool) error {
	err := config.WriteSecretFile(path, data, force)
	if !force && errors.Is(err, os.ErrExist) {
		return fmt.Errorf("-o %s: file exists; pass --force to overwrite it", path)
	}
	if err != nil {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	return nil
}

// hostName is --name's default: this machine's host name, or "" where the
// system has none to give.
func hostName() string {
	name, err := os.Hostname()
	if err != nil {
		return ""
	}
	return name
}
