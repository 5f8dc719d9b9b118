package reconcile

import (
	"fmt"
	"maps"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Reconciler applies desired peer sets to one device. It remembers what it
// believes the device holds, so an ordinary pass is a map diff plus one device
// call for the changes; a refresh pass re-reads the device first and so repairs
// drift (peers changed by hand). Not safe for concurrent use.
type Reconciler struct {
	dev    wgdev.Device
	actual map[wgtypes.Key]Spec // nil: unknown, read the device next time
}

// New returns a Reconciler for dev. Its first pass reads the device.
func New(dev wgdev.Device) *Reconciler { return &Reconciler{dev: dev} }

// Result describes one pass.
type Result struct {
	Plan     Plan
	Refresh  bool // the device was read in this pass
	Duration time.Duration
}

// Apply makes the device's peers equal desired, in at most one ConfigurePeers
// call (none when nothing differs). With refresh, or when the cache is unknown
// (first pass, or after a failed call), it reads the device first.
func (r *Reconciler) Apply(desired map[wgtypes.Key]Spec, refresh bool) (Result, error) {
	start := time.Now()
	res := Result{Refresh: refresh || r.actual == nil}
	if res.Refresh {
		peers, err := r.dev.Peers()
		if err != nil {
			r.actual = nil
			return res, fmt.Errorf("read peers of %s: %w", r.dev.Name(), err)
		}
		r.actual = FromDevice(peers)
	}
	res.Plan = PlanPeers(desired, r.actual)
	if !res.Plan.Empty() {
		if err := r.dev.ConfigurePeers(res.Plan.PeerConfigs()); err != nil {
			// What the device holds now is unknown: read it on the next pass.
			r.actual = nil
			res.Duration = time.Since(start)
			return res, fmt.Errorf("configure %d peer changes on %s: %w", len(res.Plan.Add)+len(res.Plan.Update)+len(res.Plan.Remove), r.dev.Name(), err)
		}
		r.actual = maps.Clone(desired)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// Invalidate forgets the cached device state; the next pass reads the device.
func (r *Reconciler) Invalidate() { r.actual = nil }
