package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/store"
)

// mesh is an open connection to the mesh's buckets.
type mesh struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	live   jetstream.KeyValue // nil until an agent has written a heartbeat
	server string
}

func (m *mesh) Close() { m.nc.Close() }

// withMesh runs f with the mesh open and the command's timeout applied, and
// closes the connection afterwards.
func (a *app) withMesh(cmd *cobra.Command, f func(ctx context.Context, m *mesh) error) error {
	ctx, cancel := a.withTimeout(cmd.Context())
	defer cancel()
	m, err := a.openMesh(ctx, cmd)
	if err != nil {
		return err
	}
	defer m.Close()
	return f(ctx, m)
}

// openMesh reads -c, connects to NATS once (an operator wants an answer, not
// a retry loop) and opens the bucket and, when it exists, the heartbeat bucket.
func (a *app) openMesh(ctx context.Context, cmd *cobra.Command) (*mesh, error) {
	if err := a.loadConfig(cmd); err != nil {
		return nil, err
	}
	urls := config.SplitURLs(a.natsURL)
	if len(urls) == 0 || strings.HasSuffix(urls[0], "://") {
		return nil, cli.Usagef("no NATS server: pass --nats-url nats://HOST:4222 or -c with a host's ikto.json")
	}
	// server names the servers in messages, with any password masked.
	server := config.RedactURLs(urls)
	opts := []nats.Option{nats.Name("ikto-admin"), nats.NoReconnect()}
	if a.timeout > 0 {
		opts = append(opts, nats.Timeout(a.timeout))
	}
	if a.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(a.natsCreds))
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if a.tlsCert != "" {
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w; check --nats-url (or nats_url in -c) and that the server is running", server, err)
	}
	m := &mesh{nc: nc, server: server}
	if m.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS server %s: jetstream: %w", server, err)
	}
	m.kv, err = store.OpenBucket(ctx, m.js, a.natsKV, false, 0)
	if errors.Is(err, store.ErrBucketMissing) {
		nc.Close()
		return nil, fmt.Errorf("bucket %s does not exist on NATS server %s; check --nats-kv (the first agent creates it)", a.natsKV, server)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS server %s: %w", server, err)
	}
	m.live, err = store.OpenLiveBucket(ctx, m.js, a.natsKV, false, 0)
	if errors.Is(err, store.ErrBucketMissing) {
		m.live, err = nil, nil
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS server %s: %w", server, err)
	}
	return m, nil
}
