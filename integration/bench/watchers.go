package bench

import (
	"context"
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
	w := &lightWatchers{}
	prefix := "$KV." + bucketName + "."
	conns, err := subscribe(ctx, url, "bench-watcher", n, bucket.FollowSubject(bucketName), func(i int, m *nats.Msg) {
		if t := w.target.Load(); t != nil && m.Header.Get("Nats-Subject") == prefix+t.key {
			t.probe.seen(i)
		}
	})
	w.conns = conns
	return w, err
}

// stop closes every connection, which ends every watch.
func (w *lightWatchers) stop() error {
	closeAll(w.conns)
	return nil
}

// subscribe connects n clients, each with its own connection and one
// subscription to subject, handled by handle with the client's index. The
// subscriptions are in place on the server when it returns; on an error
// every connection made is closed.
func subscribe(ctx context.Context, url, name string, n int, subject string, handle func(i int, m *nats.Msg)) ([]*nats.Conn, error) {
	conns := make([]*nats.Conn, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(watcherDialers)
	for i := range n {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // one failed: dial no more
			}
			nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("%s-%d", name, i)), nats.MaxReconnects(-1))
			if err != nil {
				return fmt.Errorf("%s %d: connect: %w", name, i, err)
			}
			conns[i] = nc
			// The subscription lives as long as the connection.
			if _, err := nc.Subscribe(subject, func(m *nats.Msg) { handle(i, m) }); err != nil {
				return fmt.Errorf("%s %d: subscribe %s: %w", name, i, subject, err)
			}
			if err := nc.Flush(); err != nil {
				return fmt.Errorf("%s %d: subscribe %s: %w", name, i, subject, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*nats.Conn) {
	for _, nc := range conns {
		if nc != nil {
			nc.Close()
		}
	}
}
