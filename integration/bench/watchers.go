package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
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
// connection and the same bucket-wide ordered-consumer watch an agent opens,
// so every put is fanned out to all of them. It starts from new updates (an
// agent would first read the snapshot) and only notes when a probed key
// arrives; the agent work behind each watch is measured on the full agents.
type lightWatchers struct {
	target atomic.Pointer[keyArrival]
	conns  []*nats.Conn
	wg     sync.WaitGroup
}

// watcherDialers bounds connections being set up at once, so the server's
// JetStream API queue is not flooded with consumer creations.
const watcherDialers = 32

// startWatchers connects n watchers to bucket; they run until stop.
func startWatchers(ctx context.Context, url, bucket string, n int) (*lightWatchers, error) {
	w := &lightWatchers{conns: make([]*nats.Conn, n)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(watcherDialers)
	for i := range n {
		g.Go(func() error { return w.startOne(gctx, url, bucket, i) })
	}
	if err := g.Wait(); err != nil {
		return nil, errors.Join(err, w.stop())
	}
	return w, nil
}

func (w *lightWatchers) startOne(ctx context.Context, url, bucket string, i int) error {
	nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("bench-watcher-%d", i)), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("watcher %d: connect: %w", i, err)
	}
	w.conns[i] = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("watcher %d: %w", i, err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("watcher %d: open bucket %s: %w", i, bucket, err)
	}
	// The watch lives as long as the connection; stop closes both.
	kw, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watcher %d: watch %s: %w", i, bucket, err)
	}
	w.wg.Go(func() {
		for e := range kw.Updates() {
			if e == nil {
				continue
			}
			if t := w.target.Load(); t != nil && e.Key() == t.key {
				t.probe.seen(i)
			}
		}
	})
	return nil
}

// stop closes every connection, which ends every watch.
func (w *lightWatchers) stop() error {
	for _, nc := range w.conns {
		if nc != nil {
			nc.Close()
		}
	}
	w.wg.Wait()
	return nil
}
