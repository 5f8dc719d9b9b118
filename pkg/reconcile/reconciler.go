package reconcile

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// Reconciler applies desired peer sets to one device. It remembers what it
// believes the device holds, so an ordinary pass is a diff plus one device
// call for the changes; a refresh pass re-reads the device first and so
// repairs drift (peers changed by hand). Not safe for concurrent use.
//
// The desired set is given either whole (Apply) or as per-peer changes (Set,
// Unset, then Sync). The second form makes an ordinary pass cost
// O(changes) instead of O(peers), which is what lets one watch event reach a
// 10,000-peer device in microseconds.
type Reconciler struct {
	dev     wgdev.Device
	desired map[wgtypes.Key]Spec
	dirty   map[wgtypes.Key]struct{} // keys Set or Unset since the last pass
	actual  map[wgtypes.Key]Spec     // nil: unknown, read the device next time
}

// New returns a Reconciler for dev with nothing desired. Its first pass
// reads the device.
func New(dev wgdev.Device) *Reconciler {
	return &Reconciler{dev: dev, desired: map[wgtypes.Key]Spec{}, dirty: map[wgtypes.Key]struct{}{}}
}

// Result describes one pass.
type Result struct {
	Plan     Plan
	Refresh  bool // the device was read in this pass
	Duration time.Duration
}

// Set makes s the desired configuration of its peer. The device is changed
// by the next Sync.
func (r *Reconciler) Set(s Spec) {
	r.desired[s.PublicKey] = s
	r.dirty[s.PublicKey] = struct{}{}
}

// Unset makes the peer k undesired: the next Sync removes it.
func (r *Reconciler) Unset(k wgtypes.Key) {
	delete(r.desired, k)
	r.dirty[k] = struct{}{}
}

// OnDevice reports whether the device had peer k as of the reconciler's last
// read or write, and whether that is known at all (before the first pass,
// after a failed call or Invalidate, it is not).
func (r *Reconciler) OnDevice(k wgtypes.Key) (on, known bool) {
	if r.actual == nil {
		return false, false
	}
	_, on = r.actual[k]
	return on, true
}

// Len is the number of desired peers.
func (r *Reconciler) Len() int { return len(r.desired) }

// Apply replaces the desired set with desired (copied; nil means none) and
// makes the device's peers equal it, in at most one ConfigurePeers call
// (none when nothing differs). With refresh, or when the cache is unknown
// (first pass, or after a failed call), it reads the device first.
func (r *Reconciler) Apply(desired map[wgtypes.Key]Spec, refresh bool) (Result, error) {
	r.desired = maps.Clone(desired)
	if r.desired == nil {
		r.desired = map[wgtypes.Key]Spec{}
	}
	return r.pass(refresh, true)
}

// Sync makes the device's peers equal the desired set after Set and Unset,
// in at most one ConfigurePeers call. An ordinary pass plans only the peers
// Set or Unset since the last pass; with refresh, or when the cache is
// unknown, it reads the device and compares every peer.
func (r *Reconciler) Sync(refresh bool) (Result, error) {
	return r.pass(refresh, false)
}

// AddMissing configures the peers of add that the device lacks, in one
// call, and leaves every peer the device already has as it is: a restore
// must never take a working peer away or change it on the word of a file.
// The desired set is unchanged, and the device is read again by the next
// pass, which then compares every peer.
func (r *Reconciler) AddMissing(add map[wgtypes.Key]Spec) (Result, error) {
	start := time.Now()
	res := Result{Refresh: true}
	peers, err := r.dev.Peers()
	r.actual = nil
	if err != nil {
		res.Duration = time.Since(start)
		return res, fmt.Errorf("read peers of %s: %w", r.dev.Name(), err)
	}
	res.Plan = Plan{Add: PlanPeers(add, FromDevice(peers)).Add}
	err = r.configure(res.Plan)
	res.Duration = time.Since(start)
	return res, err
}

// Put changes the peers of specs that the device has to what specs say, in
// one call; it adds none and touches no other peer. It is for peers whose
// configuration must change before the bucket's first pass (a restored peer
// whose first handshake this end starts), when nothing may be added: the
// desired set is unchanged, and the next pass reads the device again.
func (r *Reconciler) Put(specs map[wgtypes.Key]Spec) error {
	peers, err := r.dev.Peers()
	r.actual = nil
	if err != nil {
		return fmt.Errorf("read peers of %s: %w", r.dev.Name(), err)
	}
	actual := FromDevice(peers)
	maps.DeleteFunc(actual, func(k wgtypes.Key, _ Spec) bool {
		_, ok := specs[k]
		return !ok
	})
	return r.configure(Plan{Update: PlanPeers(specs, actual).Update})
}

// Reset takes the desired peers keys off the device and puts them back in
// one call: WireGuard forgets their handshake state, so each starts a fresh
// handshake at once instead of waiting out its rate limit. Keys not desired
// are ignored.
func (r *Reconciler) Reset(keys []wgtypes.Key) error {
	var p Plan
	for _, k := range keys {
		if s, ok := r.desired[k]; ok {
			p.Remove = append(p.Remove, k)
			p.Add = append(p.Add, s)
		}
	}
	if p.Empty() {
		return nil
	}
	// Removals first: the same key is then added as a new peer.
	changes := append(Plan{Remove: p.Remove}.PeerConfigs(), Plan{Add: p.Add}.PeerConfigs()...)
	if err := r.write(changes); err != nil {
		r.actual = nil
		return err
	}
	if r.actual != nil {
		for _, s := range p.Add {
			r.actual[s.PublicKey] = s
		}
	}
	return nil
}

// configure applies a non-empty plan to the device.
func (r *Reconciler) configure(p Plan) error {
	if p.Empty() {
		return nil
	}
	return r.write(p.PeerConfigsOver(r.actual))
}

// write is the one place ikto changes a device's peers.
func (r *Reconciler) write(changes []wgtypes.PeerConfig) error {
	if err := r.dev.ConfigurePeers(changes); err != nil {
		return fmt.Errorf("configure %d peer changes on %s: %w", len(changes), r.dev.Name(), err)
	}
	return nil
}

func (r *Reconciler) pass(refresh, whole bool) (Result, error) {
	start := time.Now()
	res := Result{Refresh: refresh || r.actual == nil}
	dirty := r.dirty
	r.resetDirty()
	if res.Refresh {
		peers, err := r.dev.Peers()
		if err != nil {
			r.actual = nil
			res.Duration = time.Since(start)
			return res, fmt.Errorf("read peers of %s: %w", r.dev.Name(), err)
		}
		r.actual = FromDevice(peers)
		whole = true
	}
	if whole {
		res.Plan = PlanPeers(r.desired, r.actual)
	} else {
		res.Plan = planKeys(r.desired, r.actual, dirty)
	}
	if !res.Plan.Empty() {
		if err := r.configure(res.Plan); err != nil {
			// What the device holds now is unknown: read it on the next pass.
			r.actual = nil
			res.Duration = time.Since(start)
			return res, err
		}
		if whole {
			r.actual = maps.Clone(r.desired)
		} else {
			res.Plan.applyTo(r.actual)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// resetDirty starts a new set of changed keys; the pass keeps the old one.
// (A new map rather than clear: a cleared map keeps its size, and ranging
// over it would cost as much as the burst that grew it, on every pass.)
func (r *Reconciler) resetDirty() {
	if len(r.dirty) > 0 {
		r.dirty = map[wgtypes.Key]struct{}{}
	}
}

// Rebind drives dev from now on, in place of a device that is gone: the
// desired set stays, and the next pass reads dev and writes every peer.
func (r *Reconciler) Rebind(dev wgdev.Device) {
	r.dev, r.actual = dev, nil
}

// Invalidate forgets the cached device state; the next pass reads the device.
func (r *Reconciler) Invalidate() { r.actual = nil }

// planKeys is PlanPeers restricted to keys: the changes that make actual
// equal desired for those peers only.
func planKeys(desired, actual map[wgtypes.Key]Spec, keys map[wgtypes.Key]struct{}) Plan {
	var p Plan
	for k := range keys {
		want, ok := desired[k]
		have, had := actual[k]
		switch {
		case ok && !had:
			p.Add = append(p.Add, want)
		case ok && !want.Equal(have):
			p.Update = append(p.Update, want)
		case !ok && had:
			p.Remove = append(p.Remove, k)
		}
	}
	p.sort()
	return p
}

// applyTo records in actual that the plan was applied.
func (p Plan) applyTo(actual map[wgtypes.Key]Spec) {
	for _, s := range p.Add {
		actual[s.PublicKey] = s
	}
	for _, s := range p.Update {
		actual[s.PublicKey] = s
	}
	for _, k := range p.Remove {
		delete(actual, k)
	}
}

func (p *Plan) sort() {
	bySpecKey := func(a, b Spec) int { return compareKeys(a.PublicKey, b.PublicKey) }
	slices.SortFunc(p.Add, bySpecKey)
	slices.SortFunc(p.Update, bySpecKey)
	slices.SortFunc(p.Remove, compareKeys)
}
