package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/bucket"
)

// BenchAgentBinary is the agent-core-in-a-process of cmd/ikto-bench-agent.
const BenchAgentBinary = "ikto-bench-agent"

// Binaries are the programs the scenarios run as processes.
type Binaries struct {
	*harness.Binaries        // ikto-agent
	BenchAgent        string // ikto-bench-agent
}

// buildTimeout bounds building ikto-bench-agent.
const buildTimeout = 8 * time.Minute

// BuildBinaries builds ikto-agent (as the harness does: IKTO_BIN_DIR, when
// set, is used instead) and ikto-bench-agent (taken from IKTO_BIN_DIR when it
// is there) into dir.
func BuildBinaries(ctx context.Context, dir string) (*Binaries, error) {
	hb, err := harness.BuildBinaries(ctx, dir, harness.AgentBinary)
	if err != nil {
		return nil, err
	}
	if _, err := hb.Path(harness.AgentBinary); err != nil {
		return nil, err
	}
	b := &Binaries{Binaries: hb}
	if env := os.Getenv("IKTO_BIN_DIR"); env != "" {
		if p, err := filepath.Abs(filepath.Join(env, BenchAgentBinary)); err == nil {
			if _, err := os.Stat(p); err == nil {
				b.BenchAgent = p
				return b, nil
			}
		}
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	out, err := filepath.Abs(filepath.Join(dir, BenchAgentBinary))
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", BenchAgentBinary, err)
	}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-C", filepath.Join(root, "integration", "bench"),
		"-o", out, "./cmd/"+BenchAgentBinary)
	// This module is not (yet) in go.work; it builds on its own.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w\n%s", BenchAgentBinary, err, strings.TrimSpace(string(msg)))
	}
	b.BenchAgent = out
	return b, nil
}

// world is a network of namespaces on a bridge with an embedded nats-server
// on the bridge's address, the ground of every scenario that runs real
// processes. Its names and subnets are unique to the run (the harness sees
// to that), and close removes everything it made.
type world struct {
	net  *harness.Network
	nats *natsserver.Server
	nc   *nats.Conn
	js   jetstream.JetStream
}

func newWorld(opts harness.NetworkOptions) (w *world, err error) {
	if err := harness.CheckPrerequisites(); err != nil {
		return nil, err
	}
	w = &world{}
	if w.net, err = harness.NewNetworkWithOptions(opts); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.close())
		}
	}()
	if w.nats, err = natsserver.Start(natsserver.Options{Host: w.net.Gateway, StoreDir: filepath.Join(w.net.Dir, "nats")}); err != nil {
		return nil, err
	}
	if w.nc, err = nats.Connect(w.nats.URL(), nats.Name("ikto-bench")); err != nil {
		return nil, fmt.Errorf("connect %s: %w", w.nats.URL(), err)
	}
	if w.js, err = jetstream.New(w.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return w, nil
}

// bucket opens name as an agent would, creating it.
func (w *world) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	return bucket.OpenBucket(ctx, w.js, name, true, 1)
}

// close stops every process the network started while NATS is still up,
// then NATS, then removes the network.
func (w *world) close() error {
	var errs []error
	if w.net != nil {
		errs = append(errs, w.net.StopProcesses())
	}
	if w.nc != nil {
		w.nc.Close()
	}
	if w.nats != nil {
		w.nats.Shutdown()
	}
	if w.net != nil {
		errs = append(errs, w.net.Close())
	}
	return errors.Join(errs...)
}
