package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/ipam"
	"github.com/ikto-mesh/ikto/pkg/peer"
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
	kv, closeConn, err := openBucket(ctx, servers, o.cfg.NATSCreds, o.cfg.NATSKV)
	if err != nil {
		warn(err)
		return ipam.RandomPrefix(mesh, o.cfg.SubnetPrefix, rnd)
	}
	defer closeConn()

	p, err := drawFree(ctx, mesh, o.cfg.SubnetPrefix, rnd, claimedIn(kv))
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

// claimedIn reports a prefix claimed when its record exists and is not deleted.
func claimedIn(kv jetstream.KeyValue) claimedFunc {
	return func(ctx context.Context, p netip.Prefix) (bool, error) {
		e, err := kv.Get(ctx, peer.Key(p))
		if errors.Is(err, jetstream.ErrKeyNotFound) { // also a deleted or purged key
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return e.Operation() == jetstream.KeyValuePut, nil
	}
}

// openBucket connects to NATS and opens the existing bucket; it never creates
// one, since the bucket's settings are the agents' to choose.
func openBucket(ctx context.Context, servers []string, creds, bucket string) (jetstream.KeyValue, func(), error) {
	opts := []nats.Option{
		nats.Name("ikto-init"),
		nats.Timeout(natsTimeout),
		nats.NoReconnect(),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(strings.Join(servers, ","), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil, fmt.Errorf("bucket %s does not exist (the first agent creates it; check --nats-kv)", bucket)
		}
		return nil, nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	return kv, nc.Close, nil
}
