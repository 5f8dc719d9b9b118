// Command ikto-admin is the operator tool (docs/contract.md §2): it lists the mesh from
// the bucket, evicts and un-revokes hosts, prunes hosts that stopped sending
// heartbeats, and shows one agent's view over its admin socket. It talks to
// NATS directly, so it needs no agent on the operator's machine. For meshes
// whose hosts may not create buckets or write each other's records it also
// creates the buckets (init-bucket), mints a host's config and NATS
// credentials scoped to its own record (enroll), and revokes such a
// host's NATS user (revoke-user, evict --user).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// app is the command line shared by every subcommand, and the clock (tests
// pin it so that "last seen 5m ago" is predictable).
type app struct {
	natsURL   string
	natsCreds string
	natsKV    string
	// inboxPrefix comes only from -c: an enrolled host's user receives
	// replies under its own prefix only.
	inboxPrefix string
	configPath  string
	output      string
	timeout     time.Duration

	// TLS comes from --tls-*, -c, NATS_CA…, or a nats context (natsctx.go).
	tlsCA, tlsCert, tlsKey string
	natsOpts               natsFlags
	// meshCIDR and subnetPrefix come from -c unless given as flags on list.
	cfg *config.Config
	// operatorKey is the operator key file that signs evict, prune and
	// unrevoke (--operator-key, else $IKTO_OPERATOR_KEY).
	operatorKey string

	stdout, stderr io.Writer
	now            func() time.Time
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runAt(args, stdout, stderr, time.Now)
}

func runAt(args []string, stdout, stderr io.Writer, now func() time.Time) int {
	a := &app{stdout: stdout, stderr: stderr, now: now}
	root := a.rootCommand()
	enableDocs(root)
	return cli.Execute(root, args, stdout, stderr, nil)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ikto-admin <command> [flags]",
		Short: "Operate an ikto mesh: list, evict, unrevoke, prune, status, health, enroll, init-bucket, revoke-user, init-operator, keygen",
		Long: `ikto-admin operates an ikto mesh. list, evict, unrevoke, prune and health
talk to the NATS bucket: the server comes from --nats-url, a host's config
(-c), $NATS_URL and friends, or a nats CLI context (--context), in that
order. status asks the local agent over its admin socket. init-operator,
init-bucket, enroll and revoke-user secure membership with per-host NATS
credentials (docs/securing-membership.md).

  ikto-admin -c /etc/ikto/ikto.json list
  ikto-admin --nats-url nats://nats-1:4222 evict fd10:2082:5bc1::1
  ikto-admin status -o json`,
		Version:       cli.VersionString("ikto-admin"),
		SilenceErrors: true,
		SilenceUsage:  true,
		// A root that runs makes cobra hand unknown commands to Args, where
		// they become usage errors (exit 2) instead of plain errors.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return cli.Usagef("unknown command %q; commands: list, evict, unrevoke, prune, status, health, enroll, init-bucket, revoke-user, init-operator, keygen", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(a.stderr)
			_ = cmd.Help()
			return cli.Usagef("no command given")
		},
		PersistentPreRunE: func(*cobra.Command, []string) error { return a.checkOutput() },
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true

	f := root.PersistentFlags()
	f.StringVar(&a.natsURL, "nats-url", "", "NATS server URL(s), comma-separated (default: nats_url of -c)")
	f.StringVar(&a.natsCreds, "nats-creds", "", "NATS credentials file (default: nats_creds of -c)")
	f.StringVar(&a.natsKV, "nats-kv", config.DefaultBucket, "the mesh's KV bucket (default: nats_kv of -c)")
	f.StringVarP(&a.configPath, "config", "c", "", "take the NATS settings and the mesh from this host `ikto.json`")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&a.timeout, "timeout", 5*time.Second, "how long to wait for NATS or the agent")
	f.StringVar(&a.operatorKey, "operator-key", "", "sign evict, prune and unrevoke with this operator key `FILE` (ikto-admin keygen; default $"+operatorKeyEnv+")")
	a.natsOpts.bind(f)

	root.AddCommand(a.listCommand(), a.evictCommand(), a.liftRevocationCommand(), a.pruneHostsCommand(), a.statusCommand(), a.ipCommand(), a.healthCommand(),
		a.enrollCommand(), a.initBucketCommand(), a.revokeUserCommand(), a.initOperatorCommand(), a.keygenCommand())
	for _, c := range root.Commands() {
		c.SilenceErrors, c.SilenceUsage = true, true
	}
	return root
}

func (a *app) checkOutput() error {
	switch a.output {
	case "table", "json":
		return nil
	}
	return cli.Usagef("-o %q: want table or json", a.output)
}

// exactArgs is cobra.ExactArgs as a usage error that says what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return cli.Usagef("%s takes %s, got %d arguments", cmd.Name(), what, len(args))
		}
		return nil
	}
}

// noArgs is cli.NoArgs naming the command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return cli.Usagef("%s: unexpected argument %q", cmd.Name(), args[0])
	}
	return nil
}

// loadConfig reads -c without validating it: an operator's machine may lack
// the host's key file, and only the NATS settings and the mesh matter here.
// Flags given explicitly win over the file.
func (a *app) loadConfig(cmd *cobra.Command) error {
	if a.configPath == "" || a.cfg != nil {
		return a.resolveNATS(cmd)
	}
	f, err := os.Open(a.configPath)
	if err != nil {
		return fmt.Errorf("-c %s: %w", a.configPath, err)
	}
	defer f.Close()
	c, err := config.Parse(f)
	if err != nil {
		return fmt.Errorf("-c %s: %w", a.configPath, err)
	}
	a.cfg = c
	flags := cmd.Flags()
	if !flags.Changed("nats-url") {
		a.natsURL = c.NATSURL
	}
	if !flags.Changed("nats-creds") {
		a.natsCreds = c.NATSCreds
	}
	if !flags.Changed("nats-kv") {
		a.natsKV = c.NATSKV
	}
	a.tlsCA, a.tlsCert, a.tlsKey = c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey
	a.inboxPrefix = c.NATSInboxPrefix
	return a.resolveNATS(cmd)
}

// withTimeout bounds one command's network work by --timeout.
func (a *app) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.timeout)
}
