// Command ikto-agent runs on every host of a mesh: it claims the host's prefix
// in the NATS bucket, configures the WireGuard device, and keeps its peers
// equal to the other hosts' records (SPEC §2).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/agent"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/backend"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs the agent until SIGINT/SIGTERM and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	var (
		cfgPath, socket, logFormat, logLevel string
		showVersion                          bool
	)
	cmd := &cobra.Command{
		Use:           "ikto-agent -c ikto.json [-s SOCKET]",
		Short:         "Join this host to an ikto WireGuard mesh and keep it in sync",
		Args:          cli.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				fmt.Fprintln(stdout, cli.VersionString("ikto-agent"))
				return nil
			}
			if cfgPath == "" {
				return cli.Usagef("-c/--config is required: the file ikto-init wrote")
			}
			log, err := cli.NewLogger(stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("starting", "version", cli.Version, "prefix", cfg.Prefix, "device", cfg.Device.Name, "nats_url", cfg.NATS.Redacted())
			return agent.Run(ctx, cfg, agent.Options{
				Socket:  socket,
				Log:     log,
				Version: cli.Version,
				OpenDevice: func(c wgdev.Config) (wgdev.Device, error) {
					return backend.Open(cfg.Device.Backend, c, log)
				},
			})
		},
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cli.UsageError{Err: err} })
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "configuration file (from ikto-init)")
	f.StringVarP(&socket, "socket", "s", api.DefaultSocket, "admin socket path")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&showVersion, "version", false, "print the version and exit")

	err := cmd.Execute()
	switch {
	case err == nil:
		return cli.ExitOK
	case cli.IsUsage(err):
		fmt.Fprintf(stderr, "ikto-agent: %v\nRun 'ikto-agent --help' for usage.\n", err)
		return cli.ExitUsage
	case errors.Is(err, bucket.ErrAddressInUse):
		fmt.Fprintf(stderr, "ikto-agent: %v\n", err)
		return cli.ExitInUse
	case errors.Is(err, agent.ErrEvicted):
		fmt.Fprintf(stderr, "ikto-agent: %v; create a new key and prefix with ikto-init to rejoin\n", err)
		return cli.ExitEvicted
	default:
		fmt.Fprintf(stderr, "ikto-agent: %v\n", err)
		return cli.ExitError
	}
}
