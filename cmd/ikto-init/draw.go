package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/ipam"
)

const (
	// maxDraws bounds the search for a free prefix. A mesh so full that 16
	// uniform draws all hit claimed prefixes has no room worth drawing in.
	maxDraws = 16
	// natsTimeout bounds the connection and the bucket look-ups: ikto-init is
	// interactive, and the printed address is only a hint that the agent's
	// compare-and-set claim makes safe anyway.
	natsTimeout = 2 * time.Second
)

// errMeshFull ends the search when every draw was already claimed.
var errMeshFull = errors.New("mesh looks full")

// claimedFunc reports whether a prefix is held in the bucket.
type claimedFunc func(ctx context.Context, p netip.Prefix) (bool, error)

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
	kv, closeConn, err := openBucket(ctx, settings)
	if err != nil {
		warn(err)
		return ipam.RandomPrefix(mesh, o.cfg.SubnetPrefix, rnd)
	}
	defer closeConn()

	p, err := drawFree(ctx, mesh, o.cfg.SubnetPrefix, rnd, func(ctx context.Context, p netip.Prefix) (bool, error) {
		return bucket.Claimed(ctx, kv, p)
	})
	switch {
	case errors.Is(err, errMeshFull):
		return p, fmt.Errorf("%w: %d random /%d prefixes in %s were all claimed in bucket %s on %s; use a larger --mesh-cidr or a longer --subnet-prefix",
			err, maxDraws, o.cfg.SubnetPrefix, mesh, o.cfg.NATSKV, serverName)
	case err != nil && p.IsValid():
		warn(err) // the look-up failed part way: print the draw, unchecked
		return p, nil
	}
	return p, err
}

// drawFree draws up to maxDraws prefixes and returns the first one claimed
// reports free. If claimed fails, it returns the draw it was checking with the
// error, so the caller may still use it.
func drawFree(ctx context.Context, mesh netip.Prefix, bits int, rnd io.Reader, claimed claimedFunc) (netip.Prefix, error) {
	for range maxDraws {
		p, err := ipam.RandomPrefix(mesh, bits, rnd)
		if err != nil {
			return netip.Prefix{}, err
		}
		taken, err := claimed(ctx, p)
		if err != nil {
			return p, fmt.Errorf("look up %s: %w", p, err)
		}
		if !taken {
			return p, nil
		}
	}
	return netip.Prefix{}, errMeshFull
}

// openBucket connects to NATS and opens the existing bucket; it never creates
// one, since the bucket's settings are the agents' to choose.
func openBucket(ctx context.Context, s config.NATS) (jetstream.KeyValue, func(), error) {
	conn, err := bucket.Dial(s, bucket.Client{Name: "ikto-init", Timeout: natsTimeout})
	if err != nil {
		return nil, nil, err
	}
	kv, err := conn.Mesh(ctx, false)
	if err != nil {
		conn.Close()
		if errors.Is(err, bucket.ErrBucketMissing) {
			return nil, nil, fmt.Errorf("bucket %s does not exist (the first agent creates it; check --nats-kv)", s.Bucket)
		}
		return nil, nil, err
	}
	return kv, conn.Close, nil
}
