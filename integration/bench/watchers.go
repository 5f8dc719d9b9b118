package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/ikto-mesh/ikto/pkg/bucket"
)

// keyArrival is what the light watchers wait for: an update of this bucket
// key.
type keyArrival struct {
	key   string
	probe *probe
}

// lightWatchers stand in for the hosts of a fleet too large to run every
// agent in full in one process (10,000 agents holding 10,000 peers each is
// 10⁸ peer entries). Each has what costs the NATS server per host: its own
// connection and the same subscription to what the bucket's stream
// republishes (bucket.FollowSubject) an agent follows it with, so every put
// is fanned out to all of them. It starts from new updates (an agent would
// first read the snapshot) and only notes when a probed key arrives; the
// agent work behind each subscription is measured on the full agents.
type lightWatchers struct {
	target atomic.Pointer[keyArrival]
	conns  []*nats.Conn
}

// watcherDialers bounds connections being set up at once.
const watcherDialers = 32

// startWatchers connects n watchers to bucket; they run until stop.
func startWatchers(ctx context.Context, url, bucketName string, n int) (*lightWatchers, error) {
	w := &lightWatchers{conns: make([]*nats.Conn, n)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(watcherDialers)
	for i := range n {
		g.Go(func() error { return w.startOne(gctx, url, bucketName, i) })
	}
	if err := g.Wait(); err != nil {
		return nil, errors.Join(err, w.stop())
	}
	return w, nil
}

func (w *lightWatchers) startOne(_ context.Context, url, bucketName string, i int) error {
	nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("bench-watcher-%d", i)), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("watcher %d: connect: %w", i, err)
	}
	w.conns[i] = nc
	prefix := "$KV." + bucketName + "."
	// The subscription lives as long as the connection; stop closes both.
	_, err = nc.Subscribe(bucket.FollowSubject(bucketName), func(m *nats.Msg) {
		if t := w.target.Load(); t != nil && m.Header.Get("Nats-Subject") == prefix+t.key {
			t.probe.seen(i)
		}
	})
	if err != nil {
		return fmt.Errorf("watcher %d: follow %s: %w", i, bucketName, err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("watcher %d: follow %s: %w", i, bucketName, err)
	}
	return nil
}

// stop closes every connection, which ends every watch.
func (w *lightWatchers) stop() error {
	for _, nc := range w.conns {
		if nc != nil {
			nc.Close()
		}
	}
	return nil
}
