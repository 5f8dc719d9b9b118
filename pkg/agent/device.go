package agent

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/state"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// openDevice opens the WireGuard device and hands it to the controller.
func (a *Agent) openDevice() error {
	dc := a.deviceConfig()
	dev, err := a.opt.OpenDevice(dc)
	if err != nil {
		return fmt.Errorf("device %s: %w", dc.Name, err)
	}
	a.dev.Store(&devHandle{dev})
	a.ctl.UseDevice(dev)
	return nil
}

// newController makes the controller before its device, so that reloads
// and a lost device reach it through its methods from the first moment.
func (a *Agent) newController() *mesh.Controller {
	return mesh.New(mesh.Self{
		Key: a.key.PublicKey(), Prefix: a.set.Prefix, Rules: a.set.Rules(), Keepalive: a.set.Keepalive,
	}, nil, mesh.Options{
		Log: a.log,
		// Only the hooks (also ones a reload may add), the snapshot and
		// the socket read every peer.
		KeepView: len(a.set.Hooks) > 0 || a.opt.Reload != nil || a.saver != nil || a.opt.Socket != "",
	})
}

// deviceConfig is the device's own side.
func (a *Agent) deviceConfig() wgdev.Config {
	return wgdev.Config{
		Name:       a.set.Device.Name,
		PrivateKey: a.key,
		ListenPort: a.set.Device.Port,
		Address:    a.set.Device.Address,
		MTU:        a.set.Device.MTU,
	}
}

func (a *Agent) closeDevice() {
	if h := a.dev.Load(); h != nil {
		h.Close()
	}
}

// identity is what this agent's snapshot is bound to.
func (a *Agent) identity() state.Identity {
	return state.Identity{Device: a.set.Device.Name, PublicKey: a.key.PublicKey(), Prefix: a.set.Prefix, Rules: a.set.Rules()}
}

// restore opens the device and puts back the peers of the snapshot in
// state_dir, before NATS is asked anything, when there is a snapshot written
// for this device, key, prefix and mesh whose every record still passes the
// rules. A missing, foreign or corrupt snapshot is logged and ignored; only
// failing to open the device is an error.
func (a *Agent) restore() error {
	if a.saver == nil {
		return nil
	}
	path := a.saver.Path()
	snap, err := state.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var peers map[wgtypes.Key]peer.Accepted
	if err == nil {
		peers, err = snap.Peers(a.identity())
	}
	if err != nil {
		a.log.Warn("not restoring the mesh snapshot; the device waits for NATS", "path", path, "err", err)
		return nil
	}
	if err := a.openDevice(); err != nil {
		return err
	}
	o := a.ctl.Restore(peers)
	a.publish(o)
	if o.DeviceErr != nil {
		a.log.Error("restore the mesh snapshot failed; the device waits for NATS", "path", path, "device", a.set.Device.Name, "err", o.DeviceErr)
		return nil
	}
	a.log.Info("restored the mesh from the snapshot until NATS answers", "path", path, "saved_at", snap.SavedAt,
		"peers", len(peers), "added", len(o.Plan.Add))
	return nil
}

// lostClaim cleans up after a claim that failed for good. A host whose
// prefix is held by another key, or whose key is revoked, takes off the peers
// it restored and forgets its snapshot: it is no longer part of that mesh.
// Any other failure (a stop, a permission error) leaves the device as it is.
func (a *Agent) lostClaim(err error) {
	claim := mesh.ClaimLost
	switch {
	case errors.Is(err, mesh.ErrEvicted):
		claim = mesh.ClaimEvicted
	case !errors.Is(err, bucket.ErrAddressInUse):
		return
	}
	a.discardSnapshot()
	if a.dev.Load() == nil {
		return // nothing was restored
	}
	o := a.ctl.StandDown(claim, err.Error())
	if o.DeviceErr == nil {
		a.log.Info("removed the peers restored from the snapshot", "device", a.set.Device.Name, "removed", len(o.Plan.Remove))
	}
	a.publish(o)
}

func (a *Agent) discardSnapshot() {
	if a.saver == nil {
		return
	}
	if err := a.saver.Discard(); err != nil {
		a.log.Warn("remove the mesh snapshot failed", "err", err)
	}
}

// devHandle carries the device to /v1/status.
type devHandle struct{ wgdev.Device }
