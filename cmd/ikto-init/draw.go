package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/ipam"
)

// natsTimeout bounds the connection and the bucket look-ups: ikto-init is
// interactive, and the printed address is only a hint that the agent's
// compare-and-set claim makes safe anyway.
const natsTimeout = 2 * time.Second

// drawPrefix draws a prefix for this host. With NATS servers given, it skips
// prefixes that are claimed in the bucket; when it cannot ask, it warns on
// stderr in one line naming the server and returns an unchecked draw.
func (o *options) drawPrefix(ctx context.Context, mesh netip.Prefix, rnd io.Reader, stderr io.Writer) (netip.Prefix, error) {
	servers := o.natsServers()
	if len(servers) == 0 {
		return ipam.RandomPrefix(mesh, o.cfg.SubnetPrefix, rnd)
	}
	serverName := strings.Join(servers, ",")
	warn := func(err error) {
		fmt.Fprintf(stderr, "ikto-init: warning: NATS server %s: %v; private_address was not checked against the mesh\n", serverName, err)
	}

	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	settings, err := o.host.lookup.NATS(o.cfg.NATSKV)
	if err != nil {
		warn(err)
		return ipam.RandomPrefix(mesh, o.cfg.SubnetPrefix, rnd)
	}
	m, err := openMesh(ctx, settings)
	if err != nil {
		warn(err)
		return ipam.RandomPrefix(mesh, o.cfg.SubnetPrefix, rnd)
	}
	defer m.Close()

	p, err := ipam.DrawFree(ctx, mesh, o.cfg.SubnetPrefix, rnd, m.Claimed)
	switch {
	case errors.Is(err, ipam.ErrMeshFull):
		return p, fmt.Errorf("%w in bucket %s on %s; use a larger --mesh-cidr or a longer --subnet-prefix",
			err, o.cfg.NATSKV, serverName)
	case err != nil && p.IsValid():
		warn(err) // the look-up failed part way: print the draw, unchecked
		return p, nil
	}
	return p, err
}

// openMesh connects to NATS and opens the existing bucket; it never creates
// one, since the bucket's settings are the agents' to choose.
func openMesh(ctx context.Context, s config.NATS) (*bucket.Mesh, error) {
	conn, err := bucket.Dial(s, bucket.Client{Name: "ikto-init", Timeout: natsTimeout})
	if err != nil {
		return nil, err
	}
	m, err := conn.Open(ctx, false)
	if err != nil {
		conn.Close()
		if errors.Is(err, bucket.ErrBucketMissing) {
			return nil, fmt.Errorf("bucket %s does not exist (the first agent creates it; check --nats-kv)", s.Bucket)
		}
		return nil, err
	}
	return m, nil
}
