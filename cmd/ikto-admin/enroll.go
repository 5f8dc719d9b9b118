package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// enrollFlags is enroll's command line.
type enrollFlags struct {
	name, advertise, accountSeed string
	publicKey, userNKey          string
	expires                      time.Duration
	force                        bool
	meshCIDR                     string
	subnetPrefix                 int
	wgDevName                    string
	wgPort                       int
	hostDir, keyPath             string
}

// enrollInput is enroll's command line, checked and parsed.
type enrollInput struct {
	name      string
	advertise netip.Addr
	// rules are the mesh and its prefix length.
	rules                 peer.Rules
	dir, hostDir, keyPath string
	wgDevName             string
	wgPort                int
	// publicKey is set when the host keeps its WireGuard private key.
	publicKey *wgtypes.Key
	// userKey is set when the host keeps its NATS user seed.
	userKey string
	expires time.Duration
	force   bool
}

// hostName is what a host's files are named after: no path separators, no
// surprises in a shell.
var validHostName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (a *app) enrollCommand() *cobra.Command {
	f := &enrollFlags{}
	cmd := &cobra.Command{
		Use:   "enroll --name NAME --advertise-address IP --account-seed FILE [-o DIR]",
		Short: "Mint a host's config and NATS credentials scoped to its own record",
		Long: `enroll draws a prefix that is free in the bucket and writes, in DIR (-o, default
the current directory), all with mode 0600:

  NAME.json   the host's agent config, pointing at the two files below
  NAME.creds  a NATS user JWT signed with the account seed (and the user's seed)
  NAME.key    the host's WireGuard private key

The user may write only the host's own claim (peers.<key>) and heartbeat
(hb.<key>), read and watch the bucket, and receive only its own replies: a
compromised host cannot overwrite, delete or revoke another host's record.
A host that keeps its private keys to itself gives --public-key (its
WireGuard public key: no NAME.key is written) and --user-nkey (its NATS
user's public nkey: NAME.creds holds the JWT only; append the user's seed on
the host). Enrolling a NAME again shows what would change and needs --force.
The server must run in operator (JWT) mode: docs/securing-membership.md.

Each connection of the user may hold at most ` + strconv.Itoa(enroll.HostMaxSubscriptions) + ` subscriptions and publish
messages of at most ` + strconv.Itoa(enroll.HostMaxPayload) + ` bytes; ikto-agent needs far less. The
credentials never expire unless --expires is given; the server refuses them
from then on, so enroll the host again (--force) before they do.

  ikto-admin --nats-url nats://nats-1:4222 --nats-creds admin.creds \
    enroll --name host-a --advertise-address 192.0.2.10 --account-seed ikto.nk -o ./host-a`,
		Args: noArgs,
		// -o is enroll's output directory, not the listing format.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.loadConfig(cmd); err != nil {
				return err
			}
			in, err := f.parse(cmd, a)
			if err != nil {
				return err
			}
			return a.enroll(cmd, in, f.accountSeed)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.name, "name", "", "the host's name: its record's name and its files' (required)")
	fs.StringVar(&f.advertise, "advertise-address", "", "the underlay IP other hosts reach this one on (required)")
	fs.StringVar(&f.accountSeed, "account-seed", "", "the NATS account's nkey seed `FILE` that signs the user (required)")
	fs.StringVar(&f.publicKey, "public-key", "", "the host's WireGuard public key; the host keeps its private key and no NAME.key is written")
	fs.StringVar(&f.userNKey, "user-nkey", "", "the host's NATS user public nkey (U…); the host keeps its seed and NAME.creds holds only the JWT")
	fs.DurationVar(&f.expires, "expires", 0, "the credentials expire after this long (e.g. 8760h); 0 = never (the default)")
	fs.BoolVar(&f.force, "force", false, "re-enroll a NAME that has files in DIR, replacing them")
	fs.StringVar(&f.meshCIDR, "mesh-cidr", config.DefaultMeshCIDR, "the mesh (default: mesh_cidr of -c)")
	fs.IntVar(&f.subnetPrefix, "subnet-prefix", config.DefaultSubnetPrefix, "every host's prefix length (default: subnet_prefix of -c)")
	fs.StringVar(&f.wgDevName, "wg-dev-name", config.DefaultDevName, "the host's WireGuard interface name")
	fs.IntVar(&f.wgPort, "wg-port", config.DefaultPort, "the host's WireGuard UDP port")
	fs.StringVar(&f.hostDir, "host-dir", "", "where the files will be on the host, for the paths in NAME.json (default: DIR, absolute)")
	fs.StringVar(&f.keyPath, "private-key-path", "", "private_key_path in NAME.json (default: HOST-DIR/NAME.key)")
	return cmd
}

// parse checks the command line; every problem is a usage error (exit 2).
func (f *enrollFlags) parse(cmd *cobra.Command, a *app) (*enrollInput, error) {
	in := &enrollInput{name: f.name, expires: f.expires, force: f.force}
	switch {
	case f.name == "":
		return nil, cli.Usagef("enroll needs --name NAME")
	case !validHostName.MatchString(f.name):
		return nil, cli.Usagef("--name %q: use letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit", f.name)
	case f.advertise == "":
		return nil, cli.Usagef("enroll needs --advertise-address IP (the underlay address other hosts reach %s on)", f.name)
	case f.accountSeed == "":
		return nil, cli.Usagef("enroll needs --account-seed FILE (the nkey seed of the NATS account the mesh lives in)")
	case f.expires < 0:
		return nil, cli.Usagef("--expires %s: want a positive duration, or 0 for never", f.expires)
	}
	adv, err := netip.ParseAddr(f.advertise)
	if err != nil || adv.Zone() != "" {
		return nil, cli.Usagef("--advertise-address %q is not an IP address", f.advertise)
	}
	in.advertise = adv.Unmap()
	if err := f.parseKeys(in); err != nil {
		return nil, err
	}
	if err := f.parseAddressing(cmd, a, in); err != nil {
		return nil, err
	}
	return in, f.parsePaths(cmd, a, in)
}

func (f *enrollFlags) parseKeys(in *enrollInput) error {
	if f.publicKey != "" {
		k, err := wgtypes.ParseKey(f.publicKey)
		if err != nil || k == (wgtypes.Key{}) {
			return cli.Usagef("--public-key %q is not a WireGuard public key (44 characters of base64)", f.publicKey)
		}
		in.publicKey = &k
	}
	if f.userNKey != "" {
		if !nkeys.IsValidPublicUserKey(f.userNKey) {
			return cli.Usagef("--user-nkey %q is not a NATS user public nkey (56 characters starting with U; nsc generate nkey --user)", f.userNKey)
		}
		in.userKey = f.userNKey
	}
	return nil
}

func (f *enrollFlags) parseAddressing(cmd *cobra.Command, a *app, in *enrollInput) error {
	rules, err := a.rules(cmd, f.meshCIDR, f.subnetPrefix)
	if err != nil {
		return err
	}
	in.rules = rules
	if rules.Mesh.Contains(in.advertise) {
		return cli.Usagef("--advertise-address %s is inside the mesh %s; give the underlay address", in.advertise, rules.Mesh)
	}
	if !config.ValidDevName(f.wgDevName) {
		return cli.Usagef("--wg-dev-name %q is not a valid interface name", f.wgDevName)
	}
	if f.wgPort < 1 || f.wgPort > 65535 {
		return cli.Usagef("--wg-port %d is not a UDP port (1-65535)", f.wgPort)
	}
	in.wgDevName, in.wgPort = f.wgDevName, f.wgPort
	return nil
}

func (f *enrollFlags) parsePaths(cmd *cobra.Command, a *app, in *enrollInput) error {
	in.dir = "."
	if cmd.Flags().Changed("output") {
		in.dir = a.output
	}
	if f.hostDir == "" {
		abs, err := filepath.Abs(in.dir)
		if err != nil {
			return fmt.Errorf("-o %s: %w", in.dir, err)
		}
		f.hostDir = abs
	}
	if !filepath.IsAbs(f.hostDir) {
		return cli.Usagef("--host-dir %q must be an absolute path", f.hostDir)
	}
	in.hostDir, in.keyPath = f.hostDir, f.keyPath
	if in.keyPath == "" {
		in.keyPath = filepath.Join(in.hostDir, in.name+".key")
	}
	if !filepath.IsAbs(in.keyPath) {
		return cli.Usagef("--private-key-path %q must be an absolute path", in.keyPath)
	}
	return nil
}

// enroll reads the account seed and what an earlier enrollment of the name
// left, draws the prefix with the bucket open, and writes the files.
func (a *app) enroll(cmd *cobra.Command, in *enrollInput, seedPath string) error {
	account, err := readSeedFile(seedPath, nkeys.PrefixByteAccount, "--account-seed")
	if err != nil {
		return err
	}
	defer account.Wipe()
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		return fmt.Errorf("-o %s: %w", in.dir, err)
	}
	prev, err := readPrevious(in.dir, in.name)
	if err != nil {
		return err
	}
	return a.withMesh(cmd, func(ctx context.Context, m *bucket.Mesh) error {
		e, err := a.planEnrollment(ctx, m, in, prev)
		if err != nil {
			return err
		}
		if prev.exists() {
			printChanges(a.stdout, in, prev, e)
			if !in.force {
				return fmt.Errorf("%s is already enrolled in %s; pass --force to re-enroll it with the changes above", in.name, in.dir)
			}
		}
		if err := e.sign(account); err != nil {
			return err
		}
		if err := e.write(in, prev.exists()); err != nil {
			return err
		}
		e.report(a.stdout, in, m.Bucket())
		return nil
	})
}

// readSeedFile reads an nkey seed of kind from path, for flag.
func readSeedFile(path string, kind nkeys.PrefixByte, flag string) (nkeys.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	kp, err := enroll.ParseSeed(data, kind)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return kp, nil
}

// hostURLs is nats_url for the host: the servers this command reached,
// without the operator's user and password.
func hostURLs(natsURL string) string {
	urls := config.SplitURLs(natsURL)
	for i, raw := range urls {
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			u.User = nil
			urls[i] = u.String()
		}
	}
	return strings.Join(urls, ",")
}
