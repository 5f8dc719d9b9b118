package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// withMesh runs f with the mesh open and the command's timeout applied, and
// closes the connection afterwards.
func (a *app) withMesh(cmd *cobra.Command, f func(ctx context.Context, m *bucket.Mesh) error) error {
	ctx, cancel := a.withTimeout(cmd.Context())
	defer cancel()
	m, err := a.openMesh(ctx, cmd)
	if err != nil {
		return whoMay(err)
	}
	defer m.Close()
	// A request the server denied is never answered: say why it timed out.
	return whoMay(m.Explain(f(ctx, m)))
}

// whoMay adds to a refusal by the server (bucket.ErrPermission, whose text
// names the subject) whose credentials may do what was refused: a host's
// enrolled user, which ikto-admin -c host.json uses, may read the mesh but
// write only that host's own record and heartbeat.
func whoMay(err error) error {
	if !errors.Is(err, bucket.ErrPermission) {
		return err
	}
	return fmt.Errorf("%w; these NATS credentials may not do this (an enrolled host's user may only read the mesh and write its own record): run it with the operator's credentials (--nats-creds FILE or --context NAME)", err)
}

// dial reads -c and connects to NATS once (an operator wants an answer,
// not a retry loop). replicas is used only by a bucket created on it.
func (a *app) dial(cmd *cobra.Command, replicas int) (*bucket.Conn, error) {
	if err := a.loadConfig(cmd); err != nil {
		return nil, err
	}
	urls := config.SplitURLs(a.natsURL)
	if len(urls) == 0 || strings.HasSuffix(urls[0], "://") {
		return nil, cli.Usagef("no NATS server: pass --nats-url nats://HOST:4222 or -c with a host's ikto.json")
	}
	settings, err := a.natsSettings()
	if err != nil {
		return nil, err
	}
	settings.Replicas, settings.InboxPrefix = replicas, a.inboxPrefix
	// A credentials file that cannot be read is no question for the
	// server: say so before dialling.
	if settings.Creds != "" {
		f, err := os.Open(settings.Creds)
		if err != nil {
			return nil, fmt.Errorf("NATS credentials: %w; give the .creds file with --nats-creds FILE (or nats_creds in -c, $NATS_CREDS, the nats context's creds)", err)
		}
		f.Close()
	}
	conn, err := bucket.Dial(settings, bucket.Client{Name: "ikto-admin", Timeout: a.timeout})
	if err != nil {
		return nil, err // it names the cause and what to check
	}
	return conn, nil
}

// openMesh connects and opens the mesh's bucket, which must exist: its
// settings are the agents' (or init-bucket's) to choose.
func (a *app) openMesh(ctx context.Context, cmd *cobra.Command) (*bucket.Mesh, error) {
	conn, err := a.dial(cmd, 1)
	if err != nil {
		return nil, err
	}
	m, err := conn.Open(ctx, false)
	if errors.Is(err, bucket.ErrBucketMissing) {
		conn.Close()
		return nil, fmt.Errorf("bucket %s does not exist on NATS server %s; check --nats-kv (the first agent creates it, or ikto-admin init-bucket)", a.natsKV, conn.Servers)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("NATS server %s: %w", conn.Servers, err)
	}
	return m, nil
}
