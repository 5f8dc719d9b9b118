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
		// The error may name the server already.
		msg := strings.TrimPrefix(err.Error(), "NATS server "+serverName+": ")
		fmt.Fprintf(stderr, "ikto-init: warning: NATS server %s: %s; private_address was not checked against the mesh\n", serverName, msg)
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

// checkKeyNotRevoked refuses a config for a key the mesh has revoked (an
// evicted host run through ikto-init again: the existing key is kept, never
// overwritten, and the agent would exit 4 at once). When NATS cannot be
// asked, the draw has already said so.
func (o *options) checkKeyNotRevoked(ctx context.Context) error {
	path := o.cfg.PrivateKeyPath
	if path == "" || len(o.natsServers()) == 0 {
		return nil
	}
	key, err := config.LoadPrivateKey(path)
	if err != nil {
		return nil // ensureKey warned
	}
	settings, err := o.host.lookup.NATS(o.cfg.NATSKV)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	m, err := openMesh(ctx, settings)
	if err != nil {
		return nil
	}
	defer m.Close()
	revoked, err := m.Revoked(ctx, key.PublicKey())
	if err != nil || !revoked {
		return nil
	}
	return fmt.Errorf("--private-key-path %s: its public key %s is revoked in bucket %s (this host was evicted), and ikto-init never overwrites a key: move it away (mv %s %s.revoked) and run ikto-init again to make a new one",
		path, key.PublicKey(), o.cfg.NATSKV, path, path)
}
