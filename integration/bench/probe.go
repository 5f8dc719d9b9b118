package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// probe times one change reaching many observers: the moment each of them
// has it (applied to its device, or received on its watch) after start.
type probe struct {
	start time.Time
	at    []atomic.Int64 // nanoseconds after start + 1; 0 = not yet
	left  atomic.Int64
	done  chan struct{}
}

func newProbe(observers int) *probe {
	p := &probe{at: make([]atomic.Int64, observers), done: make(chan struct{})}
	p.left.Store(int64(observers))
	if observers == 0 {
		close(p.done)
	}
	return p
}

// arm sets the clock; observations before it are not expected.
func (p *probe) arm() { p.start = time.Now() }

// seen records that observer i has the change now. Later calls for the same
// observer are ignored.
func (p *probe) seen(i int) {
	if p.at[i].CompareAndSwap(0, int64(time.Since(p.start))+1) && p.left.Add(-1) == 0 {
		close(p.done)
	}
}

// wait blocks until every observer has the change, or timeout.
func (p *probe) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d observers still without the change after %s", p.left.Load(), len(p.at), timeout)
	}
}

// latencies are the per-observer delays; valid after wait returned nil.
func (p *probe) latencies() []time.Duration {
	out := make([]time.Duration, len(p.at))
	for i := range p.at {
		out[i] = time.Duration(p.at[i].Load() - 1)
	}
	return out
}

// peerChange is what a device probe waits for: this public key added (or
// removed) by a ConfigurePeers call.
type peerChange struct {
	key    wgtypes.Key
	remove bool
	probe  *probe
}

// probedDevice is the in-memory device with one addition: when a
// ConfigurePeers call that carries the awaited change returns, it tells the
// probe. The device itself is pkg/wgdev/fake, unchanged.
type probedDevice struct {
	*fake.Device
	index  int
	target *atomic.Pointer[peerChange]
}

var _ wgdev.Device = (*probedDevice)(nil)

func (d *probedDevice) ConfigurePeers(changes []wgtypes.PeerConfig) error {
	if err := d.Device.ConfigurePeers(changes); err != nil {
		return err
	}
	t := d.target.Load()
	if t == nil {
		return nil
	}
	for i := range changes {
		if changes[i].PublicKey == t.key && changes[i].Remove == t.remove {
			t.probe.seen(d.index)
			break
		}
	}
	return nil
}
