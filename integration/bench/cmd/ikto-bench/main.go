// Command ikto-bench is ikto's benchmark suite (`make bench`, `make
// bench-smoke`): it runs every scenario of package bench, prints one table
// of figures with their targets, and writes the same figures as JSON.
//
// It needs root, iproute2, iputils-ping, /dev/net/tun, iperf3, wireguard-go
// and wireguard-tools for every scenario but propagation. IKTO_BIN_DIR
// points it at prebuilt binaries (ikto-agent, and ikto-bench-agent if there)
// instead of building them. Exit status: 0 when every scenario completed
// (whether or not its targets were met), 1 when one failed, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ikto-mesh/ikto/integration/bench"
)

func main() {
	if handled, err := bench.RunChild(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, "ikto-bench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	mode    bench.Mode
	out     string
	only    []string
	profile string
	verbose bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("ikto-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "run every scenario at a size that takes seconds (CI)")
	out := fs.String("o", "bench/results.json", "write the figures as JSON to this file")
	only := fs.String("only", "", "comma-separated scenarios to run (default all): "+strings.Join(bench.Scenarios, ","))
	profile := fs.String("cpuprofile", "", "write a CPU profile of each propagation run's probes to FILE.N")
	sizes := fs.String("n", "", "comma-separated propagation sizes to run, of the mode's (default all)")
	verbose := fs.Bool("v", false, "log debug detail")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := &options{mode: bench.Full, out: *out, profile: *profile, verbose: *verbose}
	if *smoke {
		o.mode = bench.Smoke
	}
	if *only != "" {
		o.only = strings.Split(*only, ",")
	}
	if *sizes != "" {
		var keep []bench.PropagationConfig
		for _, pc := range o.mode.Propagation {
			if slices.Contains(strings.Split(*sizes, ","), strconv.Itoa(pc.Hosts)) {
				keep = append(keep, pc)
			}
		}
		if len(keep) == 0 {
			return nil, fmt.Errorf("-n %s: the %s mode has no such propagation size", *sizes, o.mode.Name)
		}
		o.mode.Propagation = keep
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "ikto-bench:", err)
		}
		return 2
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	binDir, err := os.MkdirTemp("", "ikto-bench-bin-")
	if err != nil {
		fmt.Fprintln(stderr, "ikto-bench:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	suite := &bench.Suite{
		Mode: o.mode, Only: o.only, CPUProfile: o.profile, Log: log,
		Bins: func(ctx context.Context) (*bench.Binaries, error) { return bench.BuildBinaries(ctx, binDir) },
	}
	report := bench.NewReport(o.mode.Name)
	ok := suite.Run(ctx, report)
	report.Finish()
	if err := errors.Join(report.WriteJSON(o.out), report.WriteTable(stdout)); err != nil {
		fmt.Fprintln(stderr, "ikto-bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "figures written to %s\n", o.out)
	if !ok {
		return 1
	}
	return 0
}
