package mesh

import (
	"context"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Inputs are what wakes the controller's loop, and where its outcomes go.
type Inputs struct {
	// Batches come from the bucket's watch: a snapshot, then updates.
	Batches <-chan peer.Batch
	// Resync is how often the device is read and drift repaired.
	Resync time.Duration
	// Connected says whether NATS answers: while it does not, the device
	// is left exactly as it is, drift included.
	Connected func() bool
	// Publish receives every pass's outcome, in the loop's goroutine. It
	// must not block: consumers take what they need and return.
	Publish func(Outcome)
	// Reopen makes a new device when the old one is gone (DeviceLost),
	// retrying until ctx ends.
	Reopen func(context.Context) (wgdev.Device, error)
}

// Tune hands the loop new run-time settings (a reloaded config); a newer
// tuning replaces one the loop has not taken yet. Safe from any goroutine,
// before or while Run runs.
func (c *Controller) Tune(t Tuning) {
	for {
		select {
		case c.tune <- t:
			return
		default:
		}
		select {
		case <-c.tune:
		default:
		}
	}
}

// DeviceLost tells the loop that its device is gone: it makes a new one
// (Inputs.Reopen) and puts the mesh on it. The channel returned is closed
// once it has, or at once when ctx ends first. Safe from any goroutine.
func (c *Controller) DeviceLost(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	select {
	case c.lost <- done:
	case <-ctx.Done():
		close(done)
	}
	return done
}

// Tuning is what may change while the controller runs.
type Tuning struct {
	Resync    time.Duration
	Keepalive time.Duration
	// Rotate, when set, is a new private key for this host (a key
	// rotation, Controller.Rotate).
	Rotate *wgtypes.Key
}

// Run is the controller's loop. Watch batches and the resync timer only wake
// it; each wake-up is one pass over everything that changed (a burst of
// batches becomes one pass). Nothing is applied before the first snapshot.
// It returns nil when ctx ends, or the outcome's Err when this host is no
// longer a member (its peers are gone by then).
func (c *Controller) Run(ctx context.Context, in Inputs) error {
	resync := time.NewTicker(in.Resync)
	defer resync.Stop()
	// Armed while first contacts are pending: from the start, for those
	// Restore began.
	contacts := c.armContacts(contactTimer{}, time.Now())
	for {
		refresh := false
		select {
		case <-ctx.Done():
			return nil
		case now := <-contacts.c:
			// First contacts under way finish while NATS is down too:
			// they only bring peers already on the device to what their
			// records say (docs/contract.md §6).
			contacts = contactTimer{}
			if !c.checkContacts(now) {
				// Restarts (if any) went to the device; nothing to re-apply.
				contacts = c.armContacts(contacts, time.Now())
				continue
			}
		case r := <-c.refusals():
			c.noteRefused(r)
			if !c.loaded || !c.startRefused(time.Now()) {
				// A refused answer brings a look forward.
				contacts = c.armContacts(contacts, time.Now())
				continue
			}
		case b := <-in.Batches:
			c.Load(b)
			c.drain(in.Batches)
		case <-resync.C:
			if !c.loaded || (in.Connected != nil && !in.Connected()) {
				continue
			}
			refresh = true
		case replaced := <-c.lost:
			dev, err := in.Reopen(ctx)
			if err != nil {
				close(replaced)
				return nil // only a stop ends Reopen
			}
			c.ReplaceDevice(dev)
			if !c.loaded {
				close(replaced)
				continue
			}
			o := c.Pass(true)
			in.Publish(o)
			close(replaced)
			if err := o.Err(); err != nil {
				return err
			}
			contacts = c.armContacts(contacts, time.Now())
			continue
		case t := <-c.tune:
			if t.Resync > 0 && t.Resync != in.Resync {
				in.Resync = t.Resync
				resync.Reset(t.Resync)
			}
			if t.Rotate != nil {
				if err := c.Rotate(*t.Rotate); err != nil {
					c.log.Error("key rotation failed; the host keeps its key", "err", err)
				}
			} else if t.Keepalive == c.self.Keepalive {
				continue
			}
			if t.Keepalive != c.self.Keepalive {
				c.setKeepalive(t.Keepalive)
			}
		}
		if !c.loaded {
			// Restored peers' contacts go on; what they change waits for
			// the bucket's first pass.
			contacts = c.armContacts(contacts, time.Now())
			continue
		}
		c.drainRefusals()
		o := c.Pass(refresh)
		in.Publish(o)
		if err := o.Err(); err != nil {
			return err
		}
		contacts = c.armContacts(contacts, time.Now())
	}
}

// contactTimer is the loop's timer for the next check of pending first
// contacts, and when it fires; the zero value is disarmed.
type contactTimer struct {
	c  <-chan time.Time
	at time.Time
}

// armContacts returns the timer for the next check of pending first
// contacts: t itself when it fires soon enough (a new one may be due sooner
// than the one t was armed for), disarmed when nothing is pending or waiting.
func (c *Controller) armContacts(t contactTimer, now time.Time) contactTimer {
	if len(c.contacts) == 0 && len(c.waiting) == 0 {
		return contactTimer{}
	}
	wait := c.contactWait(now)
	if t.c != nil && !t.at.After(now.Add(wait)) {
		return t
	}
	return contactTimer{c: time.After(wait), at: now.Add(wait)}
}

// drainRefusals notes the refusals already reported, so a pass that takes
// a peer whose initiation the device refused lets this end start at once
// (beginContact) instead of taking it waiting, with no endpoint, and
// starting it a moment later: traffic of that moment would spend this end's
// one initiation per 5 s on a peer it could not reach.
func (c *Controller) drainRefusals() {
	for {
		select {
		case r := <-c.refusals():
			c.noteRefused(r)
		default:
			return
		}
	}
}

// drain loads the batches already queued, so a burst costs one pass.
func (c *Controller) drain(batches <-chan peer.Batch) {
	for {
		select {
		case b := <-batches:
			c.Load(b)
		default:
			return
		}
	}
}
