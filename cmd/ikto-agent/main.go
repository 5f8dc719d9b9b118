// Command ikto-agent runs on every host of a mesh: it claims the host's prefix
// in the NATS bucket, configures the WireGuard device, and keeps its peers
// equal to the other hosts' records (docs/contract.md §2).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/agent"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/fdstore"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/backend"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// flags are ikto-agent's command line.
type flags struct {
	cfgPath, socket, socketGroup, logFormat, logLevel, metricsAddr string
	showVersion, checkConfig, replace                              bool
}

// replaceWait bounds how long --replace waits for the agent before to let
// go of the device once it said it stops.
const replaceWait = 30 * time.Second

// run parses args, runs the agent until SIGINT/SIGTERM and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	var f flags
	cmd := &cobra.Command{
		Use:   "ikto-agent -c ikto.json [-s SOCKET]",
		Short: "Join this host to an ikto WireGuard mesh and keep it in sync",
		Long: `ikto-agent runs on every host of a mesh, as the ikto-agent service. It
claims this host's prefix in the NATS JetStream bucket with a record signed
by its WireGuard key, brings up the WireGuard device (the kernel's, or a
userspace one), and keeps the device's peers equal to the other hosts'
valid records, following the bucket as it changes. It writes a heartbeat,
runs the configured hook plugins after each change, and serves its status
(ikto-admin status) on the admin socket -s and its metrics. While NATS is
unreachable it keeps the last known peers and retries; it tells systemd it
is ready once its device carries the mesh.

-c names the configuration ikto-init wrote; --check-config validates it
without starting.`,
		Args:          cli.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.showVersion {
				fmt.Fprintln(stdout, cli.VersionString("ikto-agent"))
				return nil
			}
			if f.cfgPath == "" {
				return cli.Usagef("-c/--config is required: the file ikto-init wrote")
			}
			if f.checkConfig {
				return checkConfig(f.cfgPath, stdout)
			}
			return f.runAgent(cmd, stderr)
		},
	}
	enableDocs(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&f.cfgPath, "config", "c", "", "configuration file (from ikto-init)")
	fs.StringVarP(&f.socket, "socket", "s", api.DefaultSocket, "admin socket path")
	fs.StringVar(&f.socketGroup, "socket-group", api.DefaultGroup, "group whose members may read the admin socket (ikto-admin status) besides root, if it exists; \"\" for root alone")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error (default: log_level of -c, else info)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve /metrics on this TCP host:port (default: metrics_listen of -c)")
	fs.BoolVar(&f.checkConfig, "check-config", false, "validate the config, print the resolved settings and exit 0 (valid) or 1")
	fs.BoolVar(&f.replace, "replace", false, "take the device over from the agent running on it, which stops: an upgrade without systemd in which the link, its addresses and routes stay (nothing running is no error)")
	fs.BoolVarP(&f.showVersion, "version", "v", false, "print the version and exit")

	return cli.Execute(cmd, args, stdout, stderr, exitCode)
}

// exitCode gives the two failures a supervisor must not simply restart
// their own codes (docs/contract.md §2).
func exitCode(err error) (int, string) {
	switch {
	case errors.Is(err, bucket.ErrAddressInUse):
		return cli.ExitInUse, ""
	case errors.Is(err, agent.ErrEvicted):
		return cli.ExitEvicted, ""
	}
	return cli.ExitError, ""
}

// runAgent runs the agent until SIGINT or SIGTERM. SIGHUP re-reads the
// config and hands it to the agent; it never stops the agent.
func (f *flags) runAgent(cmd *cobra.Command, stderr io.Writer) error {
	log, level, err := cli.NewLeveledLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		return err
	}
	// The default group is the package's; one named on the command line
	// must exist.
	group, err := api.SocketGroup(f.socketGroup, !cmd.Flags().Changed("socket-group"))
	if err != nil {
		return fmt.Errorf("--socket-group: %w, or pass --socket-group \"\" so that only root may read the socket", err)
	}
	levelFlag := cmd.Flags().Changed("log-level")
	f.applyLevel(cfg, level, levelFlag, log)
	if f.metricsAddr != "" {
		cfg.MetricsListen = f.metricsAddr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A new agent that takes the device over (--replace) stops this one
	// as a signal would.
	ctx, handedOver := context.WithCancel(ctx)
	defer handedOver()
	reloads := make(chan *config.Settings, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			next, err := config.Load(f.cfgPath)
			if err != nil {
				log.Error("SIGHUP: config not reloaded; the running one stays", "err", err)
				continue
			}
			f.applyLevel(next, level, levelFlag, log)
			if f.metricsAddr != "" {
				next.MetricsListen = f.metricsAddr
			}
			reloads <- next
		}
	}()
	log.Info("starting", "version", cli.Version, "prefix", cfg.Prefix, "device", cfg.Device.Name, "nats_url", cfg.NATS.Redacted())
	store := fdstore.FromEnv()
	tuns := newTUNKeeper(store, cfg.Device.Backend, cfg.Device.Name, log)
	if f.replace {
		if err := tuns.takeOver(cfg.Device.Name, cfg.Device.Backend); err != nil {
			return err
		}
	}
	err = agent.Run(ctx, cfg, agent.Options{
		Socket:      f.socket,
		SocketGroup: group,
		Log:         log,
		Version:     cli.Version,
		Reload:      reloads,
		OpenDevice: func(c wgdev.Config) (wgdev.Device, error) {
			return tuns.open(c, func(c wgdev.Config) (wgdev.Device, error) { return backend.Open(cfg.Device.Backend, c, log) })
		},
		CheckDevice: func(c wgdev.Config) error { return backend.Preflight(cfg.Device.Backend, tuns.config(c)) },
		HoldDevice: func(name string) (func(), error) {
			return backend.Hold(name, backend.Holder{PID: os.Getpid(), Socket: absPath(f.socket), Config: absPath(f.cfgPath),
				HandOver: &backend.HandOver{TUN: func() (*os.File, error) {
					if store != nil {
						// It would exit 0 and leave the unit stopped, the new
						// agent unsupervised.
						return nil, errors.New("this agent runs under a service manager: restart its unit (systemctl restart ikto-agent), which keeps the TUN in the unit's fd store")
					}
					return tuns.running()
				}, Stop: func() {
					log.Info("a new agent took the device over (ikto-agent --replace); stopping, and leaving it the TUN", "device", name)
					handedOver()
				}}})
		},
		WatchDevice: backend.WatchRemoval,
	})
	if errors.Is(err, agent.ErrEvicted) || errors.Is(err, bucket.ErrAddressInUse) {
		tuns.drop() // no agent comes back for this device
	}
	if errors.Is(err, agent.ErrEvicted) {
		// ikto-init never overwrites a key: the revoked one must go first.
		k := cfg.PrivateKeyPath
		return fmt.Errorf("%w; the key in %s is revoked for good: to rejoin, move it away (mv %s %s.revoked) and run ikto-init again, which makes a new key and draws a new prefix", err, k, k, k)
	}
	return err
}

// absPath is path made absolute, for another agent's messages: "" when
// it cannot be.
func absPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	return abs
}

// applyLevel sets the log level from the config unless --log-level was given.
func (f *flags) applyLevel(cfg *config.Settings, level *slog.LevelVar, fromFlag bool, log *slog.Logger) {
	if fromFlag || cfg.LogLevel == "" {
		return
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(cfg.LogLevel)); err == nil && lv != level.Level() {
		level.Set(lv)
		log.Info("log level set from the config", "log_level", cfg.LogLevel)
	}
}

// checkConfig validates the file, and its mesh_cidr against this host's
// addresses and routes, and prints the settings it resolves to.
func checkConfig(path string, stdout io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if err := backend.CheckMeshCIDR(cfg.Mesh, cfg.Device.Name); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	shown := *cfg
	shown.NATS.URLs = []string{cfg.NATS.Redacted()}
	out, err := json.MarshalIndent(settingsView(shown), "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n%s: valid\n", out, path)
	return nil
}
