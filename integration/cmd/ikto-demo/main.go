// Command ikto-demo is what `make demo` runs: it builds the ikto binaries,
// stands up an embedded NATS server and three hosts in network namespaces,
// starts an agent on each, waits for the mesh to converge, and prints the
// mesh and a ping matrix over WireGuard. Everything is torn down on exit or
// Ctrl-C; with KEEP=1 the mesh stays up until Ctrl-C, for poking at.
//
// It needs root, iproute2, iputils-ping and /dev/net/tun. IKTO_BIN_DIR
// points it at prebuilt binaries instead of building them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

const (
	bucketName      = "ikto-mesh"
	convergeTimeout = 60 * time.Second
	pingTimeout     = 15 * time.Second
)

var hostNames = []string{"alpha", "bravo", "charlie"}

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := demo(ctx, os.Stdout, log, os.Getenv("KEEP") == "1"); err != nil {
		if errors.Is(err, context.Canceled) {
			log.Info("interrupted; torn down")
			return 130
		}
		log.Error("demo failed", "err", err)
		return 1
	}
	return 0
}

// demo runs the whole show; every resource is released by its defers, so an
// error or a Ctrl-C anywhere leaves nothing behind.
func demo(ctx context.Context, out io.Writer, log *slog.Logger, keep bool) (err error) {
	if err := harness.CheckPrerequisites(); err != nil {
		return err
	}
	bins, cleanup, err := buildBinaries(ctx, log)
	if err != nil {
		return err
	}
	defer cleanup()
	n, err := harness.NewNetwork()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := n.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	log.Info("network up", "bridge", n.Bridge, "underlay", n.Subnet, "mesh", n.Mesh)

	srv, err := natsserver.Start(natsserver.Options{Host: n.Gateway, StoreDir: filepath.Join(n.Dir, "nats")})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	log.Info("nats up", "url", srv.URL())
	// Deferred after the server, so the agents stop while it is still up.
	defer func() {
		if serr := n.StopProcesses(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()

	hosts, agents, err := startAgents(n, srv, bins, log)
	if err != nil {
		return err
	}
	if err := waitConverged(ctx, hosts, agents, log); err != nil {
		return err
	}
	if err := printMesh(ctx, out, n, srv); err != nil {
		return err
	}
	failed := printPings(ctx, out, hosts)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if keep {
		printHints(out, bins, hosts)
		<-ctx.Done()
		fmt.Fprintln(out, "\ntearing down…")
	}
	if failed > 0 {
		return fmt.Errorf("%d pings over WireGuard failed", failed)
	}
	return nil
}

// startAgents adds the demo's hosts and starts an agent on each.
func startAgents(n *harness.Network, srv *natsserver.Server, bins *harness.Binaries, log *slog.Logger) ([]*harness.Host, []*harness.Agent, error) {
	var hosts []*harness.Host
	var agents []*harness.Agent
	for _, name := range hostNames {
		h, err := n.AddHost(name)
		if err != nil {
			return nil, nil, err
		}
		a, err := h.StartAgent(bins, h.Config(srv.URL(), bucketName))
		if err != nil {
			return nil, nil, err
		}
		log.Info("agent started", "host", h.Name, "namespace", h.Namespace, "pid", a.PID, "device", h.DevName)
		hosts, agents = append(hosts, h), append(agents, a)
	}
	return hosts, agents, nil
}

// waitConverged waits until every device lists every other host; when that
// fails it prints the agents' logs, since they say why.
func waitConverged(ctx context.Context, hosts []*harness.Host, agents []*harness.Agent, log *slog.Logger) error {
	start := time.Now()
	err := testkit.Poll(ctx, convergeTimeout, func(context.Context) error {
		for _, a := range agents {
			if code, ok := a.ExitCode(); ok {
				return testkit.Permanent(fmt.Errorf("%s exited with %d", a.Name, code))
			}
		}
		return harness.CheckMesh(hosts)
	})
	if err == nil {
		log.Info("mesh converged", "after", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, a := range agents {
		fmt.Fprintf(os.Stderr, "---- %s log %s:\n%s\n", a.Name, a.LogPath, a.LogTail(25))
	}
	return fmt.Errorf("mesh did not converge: %w", err)
}

// buildBinaries builds the agent and the admin tool into a temporary
// directory that cleanup removes (or takes IKTO_BIN_DIR's). Only the agent
// is required.
func buildBinaries(ctx context.Context, log *slog.Logger) (bins *harness.Binaries, cleanup func(), err error) {
	cleanup = func() {}
	dir := os.Getenv("IKTO_BIN_DIR")
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ikto-demo-bin-"); err != nil {
			return nil, nil, fmt.Errorf("binary dir: %w", err)
		}
		cleanup = func() { _ = os.RemoveAll(dir) }
		log.Info("building binaries", "dir", dir)
	}
	start := time.Now()
	bins, err = harness.BuildBinaries(ctx, dir, harness.AgentBinary, harness.AdminBinary)
	if bins == nil {
		cleanup()
		return nil, nil, err
	}
	if _, perr := bins.Path(harness.AgentBinary); perr != nil {
		cleanup()
		return nil, nil, perr
	}
	if err != nil {
		log.Warn("some binaries did not build; going on without them", "err", err)
	}
	log.Info("binaries ready", "dir", bins.Dir, "took", time.Since(start).Round(time.Millisecond))
	return bins, cleanup, nil
}

// printMesh prints every record of the bucket: what the agents claimed.
func printMesh(ctx context.Context, out io.Writer, n *harness.Network, srv *natsserver.Server) error {
	b, err := harness.OpenBucket(ctx, srv.URL(), bucketName)
	if err != nil {
		return err
	}
	defer b.Close()
	recs, err := b.Records(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmesh %s over underlay %s, bucket %q at %s\n\n", n.Mesh, n.Subnet, bucketName, srv.URL())
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPREFIX\tENDPOINT\tPUBLIC KEY")
	var list []peer.Record
	for _, r := range recs {
		list = append(list, r)
	}
	slices.SortFunc(list, func(a, b peer.Record) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.AllowedIP, r.Endpoint(), r.PublicKey)
	}
	return tw.Flush()
}

// printPings pings every host's private address from every other host over
// WireGuard and prints the matrix; it returns how many pairs failed.
func printPings(ctx context.Context, out io.Writer, hosts []*harness.Host) int {
	fmt.Fprintf(out, "\nping over WireGuard (row pings column's private_address):\n\n")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, h := range hosts {
		fmt.Fprintf(tw, "%s\t", h.Name)
	}
	fmt.Fprintln(tw)
	failed := 0
	for _, from := range hosts {
		fmt.Fprintf(tw, "%s\t", from.Name)
		for _, to := range hosts {
			if from == to {
				fmt.Fprint(tw, "-\t")
				continue
			}
			var rtt time.Duration
			err := testkit.Poll(ctx, pingTimeout, func(ctx context.Context) error {
				var err error
				rtt, err = from.Ping(ctx, to.PrivateAddress)
				return err
			})
			if err != nil {
				failed++
				fmt.Fprint(tw, "✗\t")
				continue
			}
			fmt.Fprintf(tw, "✓ %.2fms\t", float64(rtt)/float64(time.Millisecond))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return failed
}

// printHints tells how to look at the running mesh.
func printHints(out io.Writer, bins *harness.Binaries, hosts []*harness.Host) {
	a, b := hosts[0], hosts[1]
	fmt.Fprintf(out, "\nThe mesh stays up until Ctrl-C. Try:\n\n")
	fmt.Fprintf(out, "  wg show %s    # %s's device (userspace: its socket is in /var/run/wireguard)\n", a.DevName, a.Name)
	fmt.Fprintf(out, "  ip netns exec %s ip addr show %s\n", a.Namespace, a.DevName)
	fmt.Fprintf(out, "  ip netns exec %s ping -c3 %s\n", a.Namespace, b.PrivateAddress)
	fmt.Fprintf(out, "  curl --unix-socket %s http://ikto/v1/status\n", a.SocketPath)
	fmt.Fprintf(out, "  curl --unix-socket %s http://ikto/metrics\n", a.SocketPath)
	if admin, err := bins.Path(harness.AdminBinary); err == nil {
		fmt.Fprintf(out, "  %s status -s %s\n", admin, a.SocketPath)
	}
	fmt.Fprintf(out, "\nhosts:\n")
	for _, h := range hosts {
		fmt.Fprintf(out, "  %-8s netns %s  underlay %s  private %s  device %s\n           config %s\n           log    %s\n",
			h.Name, h.Namespace, h.Addr, h.PrivateAddress, h.DevName, filepath.Join(h.Dir, "ikto.json"), filepath.Join(h.Dir, "agent-1.log"))
	}
}
