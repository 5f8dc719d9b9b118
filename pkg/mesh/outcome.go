package mesh

import (
	"errors"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/reconcile"
)

// ErrEvicted means this host's record was deleted (a delete marker on a
// record that was its own) or its key revoked. The controller has removed
// every peer; the agent must not claim again by itself (exit 4).
var ErrEvicted = errors.New("evicted")

// State is where the controller stands, as /v1/status shows it.
type State string

// The states, in the order a normal life goes through them.
const (
	// StateWaiting: no bucket snapshot has been applied yet.
	StateWaiting State = "waiting for NATS"
	// StateRestored: the device carries the peers of the local snapshot
	// until the bucket answers.
	StateRestored State = "restored from snapshot"
	// StateSynced: the device follows the bucket.
	StateSynced State = "synced"
	// StateStandingDown: this host is out of the mesh and has no peers.
	StateStandingDown State = "standing down"
)

// Outcome is what one pass did. It is immutable: hooks, the snapshot saver,
// metrics and /v1/status read it from any goroutine and never reach back into
// the controller.
type Outcome struct {
	Seq uint64 // passes so far, this one included
	At  time.Time
	// Revision is the highest bucket revision the table has taken in.
	Revision uint64
	State    State
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
	// Claim is the state of this host's own claim, Why (unless held) the
	// reason, and Repair what the bucket must be asked to heal it.
	Claim  Claim
	Why    string
	Repair peer.Repair
	// Contacts are the peers whose first handshake is being orchestrated,
	// and since when.
	Contacts map[wgtypes.Key]time.Time
	// Ended counts the first contacts that ended since the last pass, by
	// how; Restarts the handshakes restarted as crossed meanwhile.
	Ended    ContactEnds
	Restarts int
}

// ContactEnds counts first contacts by how they ended: with a handshake,
// or at their bound without one (the peer left to WireGuard's own timers:
// it is down, or the device reported nothing first contact could act on).
type ContactEnds struct {
	Handshake, Bound int
}

// Err is the error that ends the agent after this pass: ErrEvicted (with
// why) after an eviction, else nil. Nothing else a pass sees stops an agent.
func (o Outcome) Err() error {
	if o.Claim == ClaimEvicted {
		return fmt.Errorf("%w: %s", ErrEvicted, o.Why)
	}
	return nil
}

// Synced reports whether the device followed the bucket in this pass.
func (o Outcome) Synced() bool { return o.State == StateSynced }
