package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

func (a *app) initOperatorCommand() *cobra.Command {
	var name, resolverDir string
	cmd := &cobra.Command{
		Use:   "init-operator [-o DIR] [--name NAME] [--resolver-dir PATH]",
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
  nats-auth.conf                   include it in nats-server.conf (2.9 or later)`,
		Args: noArgs,
		// -o is the output directory here, not the listing format.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := "."
			if cmd.Flags().Changed("output") {
				dir = a.output
			}
			if !filepath.IsAbs(resolverDir) {
				return cli.Usagef("--resolver-dir %q must be an absolute path", resolverDir)
			}
			return a.initOperator(dir, name, resolverDir)
		},
	}
	cmd.Flags().StringVar(&name, "name", "ikto", "the operator's name")
	cmd.Flags().StringVar(&resolverDir, "resolver-dir", "/var/lib/nats/jwt", "where nats-server keeps account JWTs (resolver: full)")
	return cmd
}

// operatorFile is one file init-operator writes.
type operatorFile struct {
	name   string
	data   []byte
	secret bool
}

func (a *app) initOperator(dir, name, resolverDir string) error {
	auth, err := enroll.NewAuthority(name)
	if err != nil {
		return err
	}
	files, err := operatorFiles(auth, resolverDir)
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
	fmt.Fprintf(a.stdout, `operator %q, mesh account %s
next: include %s in nats-server.conf (with jetstream {}), create %s, start the server,
then: ikto-admin --nats-url nats://SERVER:4222 --nats-creds %s init-bucket
      ikto-admin --nats-url nats://SERVER:4222 --nats-creds %s enroll --account-seed %s --name HOST --advertise-address IP -o DIR
keep operator.nk offline: it is needed only to revoke a host's user (ikto-admin revoke-user)
`, name, accountKey, filepath.Join(dir, "nats-auth.conf"), resolverDir,
		filepath.Join(dir, "admin.creds"), filepath.Join(dir, "admin.creds"), filepath.Join(dir, "ikto.nk"))
	return nil
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
