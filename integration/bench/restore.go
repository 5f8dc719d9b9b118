package bench

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/state"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// restoreBucket names the mesh the restore figures' records are signed for.
const restoreBucket = "ikto-bench-restore"

// RestoreFigures measure what a restarting agent pays before its device has
// its peers back and before NATS is asked anything: reading a snapshot of
// records (every record through the acceptance rules, every signature
// verified) and handing the peers to a controller over an in-memory device.
func RestoreFigures(records, runs int) ([]Figure, error) {
	fleet, err := NewFleet(benchMesh, config.DefaultSubnetPrefix)
	if err != nil {
		return nil, err
	}
	var figs []Figure
	medians := map[bool]float64{}
	for _, signed := range []bool{false, true} {
		recs, err := fleet.Records(records)
		if signed {
			recs, err = fleet.SignedRecords(records, restoreBucket)
		}
		if err != nil {
			return nil, err
		}
		var took []float64
		for range runs {
			d, err := restoreOnce(fleet, recs)
			if err != nil {
				return nil, err
			}
			took = append(took, ms(d))
		}
		what := "unsigned"
		if signed {
			what = "signed"
		}
		f := NewFigure("restart", fmt.Sprintf("snapshot read → peers on the device, %s %s records, in-memory device", thousands(records), what), "ms", took, nil)
		medians[signed] = f.Median
		figs = append(figs, f)
	}
	if medians[false] > 0 {
		figs = append(figs, NewFigure("restart", fmt.Sprintf("signed / unsigned, snapshot restore of %s records", thousands(records)), "×", []float64{medians[true] / medians[false]}, nil))
	}
	return figs, nil
}

// restoreOnce writes recs as a snapshot and times reading it back into a
// fresh controller's device.
func restoreOnce(fleet *Fleet, recs []peer.Record) (time.Duration, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return 0, err
	}
	id := state.Identity{Device: "bench0", PublicKey: k.PublicKey(), Prefix: fleet.Prefix(fleet.Next()),
		Rules: peer.Rules{Mesh: fleet.Mesh, Bits: fleet.Bits, Bucket: restoreBucket}}
	peers := make([]peer.Accepted, len(recs))
	for i, r := range recs {
		peers[i] = peer.Accepted{Key: peer.Key(netip.MustParsePrefix(r.AllowedIP)), Revision: uint64(i + 1), Record: r}
	}
	snap := state.New(id, peers, time.Now())
	start := time.Now()
	got, err := snap.Peers(id)
	if err != nil {
		return 0, fmt.Errorf("restore figures: %w", err)
	}
	dev := fake.New(wgdev.Config{Name: id.Device, PrivateKey: k, ListenPort: 51820})
	ctl := mesh.New(mesh.Self{Key: id.PublicKey, Prefix: id.Prefix, Rules: id.Rules}, dev, mesh.Options{})
	o := ctl.Restore(got)
	if o.DeviceErr != nil || o.Configured != len(recs) {
		return 0, fmt.Errorf("restore figures: %d of %d peers configured: %v", o.Configured, len(recs), o.DeviceErr)
	}
	return time.Since(start), nil
}
