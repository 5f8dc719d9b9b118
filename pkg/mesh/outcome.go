package mesh

import (
	"errors"
	"fmt"
	"time"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

// ErrEvicted means this host's record was deleted or its key revoked. The
// controller has removed every peer; the agent must not claim again by itself
// (exit 4).
var ErrEvicted = errors.New("evicted")

// ErrTakenOver means this host's prefix is now held by another public key, or
// by something that is not a record. It matches bucket.ErrAddressInUse too
// (exit 3).
var ErrTakenOver = fmt.Errorf("prefix taken over by another key: %w", bucket.ErrAddressInUse)

// State is where the controller stands, as /v1/status shows it.
type State string

// The states, in the order a normal life goes through them.
const (
	// StateWaiting: no bucket snapshot has been applied yet.
	StateWaiting State = "waiting"
	// StateRestored: the device carries the peers of the local snapshot
	// until the bucket answers.
	StateRestored State = "restored"
	// StateSynced: the device follows the bucket.
	StateSynced State = "synced"
	// StateStandingDown: this host is out of the mesh and has no peers.
	StateStandingDown State = "standing down"
)

// Verdict is what a pass decided about this host's own membership.
type Verdict int

// The verdicts.
const (
	// Member: the record at this host's prefix is its own.
	Member Verdict = iota
	// Evicted: its record was deleted or its key revoked (commands).
	Evicted
	// TakenOver: another key's record, or an unacceptable value, sits at
	// its prefix.
	TakenOver
)

// Outcome is what one pass did. It is immutable: hooks, the snapshot saver,
// metrics and /v1/status read it from any goroutine and never reach back into
// the controller.
type Outcome struct {
	Seq   uint64 // passes so far, this one included
	At    time.Time
	State State
	// View is the accepted set after the pass: the peers the device was
	// configured with, self, and every rejected record. It is nil on
	// ordinary passes when the controller was built without KeepView
	// (building it costs O(peers)); Restore and StandDown always set it.
	View *peer.View
	// Peers is the number of accepted peers, Configured the number the
	// device carries after a successful pass.
	Peers, Configured int
	// Changes are the accepted peers that appeared, changed or went away.
	Changes []peer.Change
	// Rejected is every rejected record; NewRejections those not reported
	// by an earlier pass at the same revision. Do not modify either.
	Rejected, NewRejections []peer.Rejection
	// Events and Snapshots count the watch entries and whole-bucket
	// snapshots folded into this pass.
	Events, Snapshots int
	// Plan is what was applied to the device, Refresh whether the device
	// was read first, Took the time the device work took.
	Plan    reconcile.Plan
	Refresh bool
	Took    time.Duration
	// DeviceErr is a failed device call; a later pass repairs it.
	DeviceErr error
	// Verdict and Why say whether this host is still a member, and why not.
	Verdict Verdict
	Why     string
}

// Err is the error that ends the agent after this pass: ErrEvicted or
// ErrTakenOver (with why), or nil.
func (o Outcome) Err() error {
	switch o.Verdict {
	case Evicted:
		return fmt.Errorf("%w: %s", ErrEvicted, o.Why)
	case TakenOver:
		return fmt.Errorf("%s: %w", o.Why, ErrTakenOver)
	}
	return nil
}

// Synced reports whether the device followed the bucket in this pass.
func (o Outcome) Synced() bool { return o.State == StateSynced }
