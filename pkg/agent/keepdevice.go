package agent

import (
	"context"
	"time"

	"github.com/ikto-mesh/ikto/pkg/retry"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// keepDevice watches the device and, when it disappears (`ip link del`, an
// interface manager, an external wireguard-go that died), has the controller
// make it again with its address, port and peers. The device is the agent's
// to keep.
func (a *Agent) keepDevice(ctx context.Context) error {
	if a.opt.WatchDevice == nil {
		return nil
	}
	name := a.set.Device.Name
	for {
		gone, err := a.opt.WatchDevice(ctx, name)
		if err != nil {
			a.log.Warn("cannot watch the device; a deleted device will not be noticed", "device", name, "err", err)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-gone:
		}
		a.log.Warn("the device is gone; making it again with its peers", "device", name)
		select { // the new device exists before it is watched again
		case <-a.ctl.DeviceLost(ctx):
		case <-ctx.Done():
			return nil
		}
	}
}

// reopen closes what is left of the old device and opens a new one, retrying
// until it succeeds or ctx ends.
func (a *Agent) reopen(ctx context.Context) (wgdev.Device, error) {
	if h := a.dev.Load(); h != nil {
		_ = h.Close()
	}
	var dev wgdev.Device
	err := retry.Do(ctx, retry.Standard, 0, func(n int, err error, next time.Duration) {
		a.log.Warn("make the device again failed; retrying", "attempt", n, "retry_in", next.Round(time.Millisecond), "err", err)
	}, func(context.Context) error {
		d, err := a.opt.OpenDevice(a.deviceConfig())
		dev = d
		return err
	})
	if err != nil {
		return nil, err
	}
	a.dev.Store(&devHandle{dev})
	a.log.Info("device made again", "device", dev.Name(), "backend", dev.Backend())
	return dev, nil
}
