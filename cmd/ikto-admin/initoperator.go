package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

// debianServerConfig is where Debian's nats-server package keeps its
// configuration (its systemd unit runs nats-server -c with it).
const debianServerConfig = "/etc/nats-server.conf"

// operatorInput is init-operator's command line, checked.
type operatorInput struct {
	dir, name, resolverDir string
	// serverConfig is the absolute path of the nats-server configuration
	// that will include nats-auth.conf.
	serverConfig string
	sizing       enroll.Sizing
}

func (a *app) initOperatorCommand() *cobra.Command {
	in := &operatorInput{}
	cmd := &cobra.Command{
		Use:   "init-operator [-o DIR] [--name NAME] [--resolver-dir PATH] [--max-hosts N] [--server-config FILE]",
		Short: "Make a NATS operator, system account and mesh account for enrolled hosts (instead of nsc)",
		Long: `init-operator makes what nats-server's operator (JWT) mode needs, without nsc:
an operator, its system account, the account the mesh lives in (JetStream on),
a user of that account with no restriction (for ikto-admin, and for hosts that
share credentials as in ikto 0.3.0), a system account user (to push account
updates such as revocations), and the server configuration that trusts them.
It writes into DIR (-o, default the current directory) and never replaces a
file:

  operator.nk  operator.jwt        the operator: keep its seed offline
  sys.nk  sys.jwt  sys.creds       the system account and a user of it
  ikto.nk  ikto.jwt                the mesh's account: enroll signs with ikto.nk
  admin.creds                      an unrestricted user of the mesh's account
  nats-auth.conf                   include it in nats-server.conf (2.9 or later)

The mesh account's limits follow from --max-hosts, the most hosts it serves
(docs/securing-membership.md): ` + describeLimits(enroll.DefaultSizing()) + `.
A standalone nats-server must have that much disk in its max_file_store, or
it refuses the account JetStream. To change them later, sign a new ikto.jwt
with the operator's key (nsc edit account) and push it.

It ends with the next steps: the include line for --server-config FILE
(default ` + debianServerConfig + `, Debian's), whose path is relative to FILE's
directory, as nats-server reads it.`,
		Args: noArgs,
		// -o is the output directory here, not the listing format.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			in.dir = "."
			if cmd.Flags().Changed("output") {
				in.dir = a.output
			}
			if !filepath.IsAbs(in.resolverDir) {
				return cli.Usagef("--resolver-dir %q must be an absolute path", in.resolverDir)
			}
			if err := in.sizing.Check(); err != nil {
				return cli.Usagef("--max-hosts: %v", err)
			}
			conf, err := filepath.Abs(in.serverConfig)
			if err != nil {
				return cli.Usagef("--server-config %q: %v", in.serverConfig, err)
			}
			in.serverConfig = conf
			return a.initOperator(in)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&in.name, "name", "ikto", "the operator's name")
	fs.StringVar(&in.resolverDir, "resolver-dir", "/var/lib/nats/jwt", "where nats-server keeps account JWTs (resolver: full)")
	fs.IntVar(&in.sizing.MaxHosts, "max-hosts", enroll.DefaultMaxHosts, "the most hosts the mesh account serves; its limits follow from it")
	fs.StringVar(&in.serverConfig, "server-config", debianServerConfig, "the nats-server configuration `FILE` that will include nats-auth.conf, for the include line printed")
	return cmd
}

// operatorFile is one file init-operator writes.
type operatorFile struct {
	name   string
	data   []byte
	secret bool
}

func (a *app) initOperator(in *operatorInput) error {
	auth, err := enroll.NewSizedAuthority(in.name, in.sizing)
	if err != nil {
		return err
	}
	files, err := operatorFiles(auth, in.resolverDir)
	if err != nil {
		return err
	}
	dir := in.dir
	include, err := includeLine(in.serverConfig, filepath.Join(dir, "nats-auth.conf"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("-o %s: %w", dir, err)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f.name)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("-o %s: %s exists; init-operator never replaces a file (an operator's keys are made once)", dir, f.name)
		}
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := writeSecret(path, f.data, false); err != nil {
			return err
		}
		if !f.secret {
			if err := os.Chmod(path, 0o644); err != nil {
				return fmt.Errorf("chmod %s: %w", path, err)
			}
		}
		fmt.Fprintf(a.stdout, "wrote %s\n", path)
	}
	accountKey, _ := auth.Account.PublicKey()
	admin, seed := filepath.Join(dir, "admin.creds"), filepath.Join(dir, "ikto.nk")
	fmt.Fprintf(a.stdout, `operator %q, mesh account %s
limits of the mesh account: %s
next:
  1. add this line to %s, which also needs a jetstream block with a store_dir
     (an include path is relative to the directory of the file that includes it):
       %s
  2. create %s, writable by the server, and start or restart the server
  3. ikto-admin --nats-url nats://SERVER:4222 --nats-creds %s init-bucket
  4. ikto-admin --nats-url nats://SERVER:4222 --nats-creds %s enroll --account-seed %s --name HOST --advertise-address IP -o DIR
keep operator.nk offline: it is needed only to revoke a host's user (ikto-admin revoke-user) or to change the account's limits
`, in.name, accountKey, describeLimits(in.sizing), in.serverConfig, include, in.resolverDir, admin, admin, seed)
	return nil
}

// includeLine is the line of the nats-server configuration serverConfig
// that includes authConf. nats-server reads an include path relative to
// the directory of the file that has the include, even one that starts
// with a slash, so the path is made relative to it.
func includeLine(serverConfig, authConf string) (string, error) {
	abs, err := filepath.Abs(authConf)
	if err != nil {
		return "", fmt.Errorf("nats-auth.conf: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(serverConfig), abs)
	if err != nil {
		return "", fmt.Errorf("include %s from %s: %w", abs, serverConfig, err)
	}
	if plainPath.MatchString(rel) {
		return "include " + rel, nil
	}
	return "include " + strconv.Quote(rel), nil
}

// plainPath is a path nats-server reads as it is after "include"; any
// other is quoted.
var plainPath = regexp.MustCompile(`^[A-Za-z0-9._/+-]+$`)

// describeLimits says what the mesh account's limits are for s.
func describeLimits(s enroll.Sizing) string {
	return fmt.Sprintf("with --max-hosts %d, %d connections, %d streams, %d consumers per stream, %s of disk and no memory streams",
		s.MaxHosts, s.Connections(), s.Streams(), s.ConsumersPerStream(), byteSize(s.DiskBytes()))
}

// byteSize is n bytes in the largest binary unit that divides it.
func byteSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func operatorFiles(auth *enroll.Authority, resolverDir string) ([]operatorFile, error) {
	seed := func(kp nkeys.KeyPair) []byte {
		s, _ := kp.Seed()
		return append(append([]byte(nil), s...), '\n')
	}
	admin, err := enroll.UserCreds(auth.Account, "admin", nil)
	if err != nil {
		return nil, err
	}
	sys, err := enroll.UserCreds(auth.System, "sys", nil)
	if err != nil {
		return nil, err
	}
	return []operatorFile{
		{"operator.nk", seed(auth.Operator), true},
		{"operator.jwt", []byte(auth.OperatorJWT + "\n"), false},
		{"sys.nk", seed(auth.System), true},
		{"sys.jwt", []byte(auth.SystemJWT + "\n"), false},
		{"sys.creds", sys, true},
		{"ikto.nk", seed(auth.Account), true},
		{"ikto.jwt", []byte(auth.AccountJWT + "\n"), false},
		{"admin.creds", admin, true},
		{"nats-auth.conf", []byte("# nats-server operator (JWT) mode for ikto; written by ikto-admin init-operator\n" +
			auth.ServerConfig(enroll.Resolver{Dir: resolverDir})), false},
	}, nil
}
