package store

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Entry is one key's state as the watch delivered it.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	Deleted  bool // deleted or purged; Value is empty
}

// Batch is what Watch hands the agent. A Snapshot batch is the whole bucket and
// replaces everything the receiver knew; any other batch is updates in order.
type Batch struct {
	Snapshot bool
	Entries  []Entry
}

// maxBatch bounds one update batch so a flood of writes cannot grow a slice
// without limit; the receiver coalesces consecutive batches anyway.
const maxBatch = 4096

// Watcher follows the whole bucket with one watch at a time.
type Watcher struct {
	KV  jetstream.KeyValue
	Log *slog.Logger
	// Restart, when it fires, makes the watcher drop its watch and take a fresh
	// snapshot. The agent kicks it on every NATS reconnect: an ordered-consumer
	// watch would only notice a restarted server after missed heartbeats.
	Restart <-chan struct{}
	// Backoff bounds the delay between failed attempts (default 100ms..5s).
	MinBackoff, MaxBackoff time.Duration
}

// Run sends a Snapshot batch each time it (re)subscribes and then update
// batches, until ctx is done. It never returns early on NATS errors: a failed
// watch, a closed updates channel (nats.go gives up on a connection) or a
// Restart kick each lead to a new watch after a jittered backoff, so a dead
// server costs a few wakeups a second at most, never a spin.
func (w *Watcher) Run(ctx context.Context, out chan<- Batch) error {
	backoff := w.minBackoff()
	for {
		ok := w.watchOnce(ctx, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ok {
			backoff = w.minBackoff()
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		backoff = min(backoff*2, w.maxBackoff())
	}
}

// watchOnce runs one watch to its end; it reports whether the snapshot was
// delivered (a healthy watch that ended resets the backoff).
func (w *Watcher) watchOnce(ctx context.Context, out chan<- Batch) bool {
	// A kick that arrived before this watch is satisfied by it.
	select {
	case <-w.Restart:
	default:
	}
	kw, err := w.KV.WatchAll(ctx)
	if err != nil {
		w.Log.Warn("watch bucket failed; retrying", "bucket", w.KV.Bucket(), "err", err)
		return false
	}
	defer kw.Stop()
	updates := kw.Updates()

	snap := Batch{Snapshot: true}
	for snapDone := false; !snapDone; {
		select {
		case <-ctx.Done():
			return false
		case <-w.Restart:
			return false
		case e, open := <-updates:
			if !open {
				w.Log.Warn("watch closed during snapshot; retrying", "bucket", w.KV.Bucket())
				return false
			}
			if e == nil {
				snapDone = true
				break
			}
			if ent := toEntry(e); !ent.Deleted {
				snap.Entries = append(snap.Entries, ent)
			}
		}
	}
	if !send(ctx, out, snap) {
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-w.Restart:
			w.Log.Info("re-reading bucket after reconnect", "bucket", w.KV.Bucket())
			return true
		case e, open := <-updates:
			if !open {
				w.Log.Warn("watch closed; re-subscribing", "bucket", w.KV.Bucket())
				return true
			}
			if e == nil {
				continue
			}
			b := Batch{Entries: []Entry{toEntry(e)}}
			// Take whatever else is already queued: a burst becomes one batch.
		drain:
			for len(b.Entries) < maxBatch {
				select {
				case e, open := <-updates:
					if !open {
						break drain
					}
					if e != nil {
						b.Entries = append(b.Entries, toEntry(e))
					}
				default:
					break drain
				}
			}
			if !send(ctx, out, b) {
				return true
			}
		}
	}
}

func send(ctx context.Context, out chan<- Batch, b Batch) bool {
	select {
	case out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

func toEntry(e jetstream.KeyValueEntry) Entry {
	ent := Entry{Key: e.Key(), Revision: e.Revision()}
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		ent.Deleted = true
	} else {
		ent.Value = e.Value()
	}
	return ent
}

func (w *Watcher) minBackoff() time.Duration {
	if w.MinBackoff > 0 {
		return w.MinBackoff
	}
	return 100 * time.Millisecond
}

func (w *Watcher) maxBackoff() time.Duration {
	if w.MaxBackoff > 0 {
		return w.MaxBackoff
	}
	return 5 * time.Second
}
