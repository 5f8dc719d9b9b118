package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/ikto-mesh/ikto/pkg/mesh"
)

// notifySystemd tells the service manager (Type=notify) where the agent
// stands: READY=1 once, when the device first carries a mesh — the first
// pass over the bucket, or the snapshot restored while NATS is down — and a
// STATUS= line at every change of state. Without $NOTIFY_SOCKET it does
// nothing.
func (a *Agent) notifySystemd(prev, o mesh.Outcome, ready bool) {
	if o.State == prev.State && o.Claim == prev.Claim && !ready {
		return
	}
	status := fmt.Sprintf("STATUS=%s, claim %s, %d peers", o.State, claimOrNone(o.Claim), o.Configured)
	msg := status
	if ready {
		msg = "READY=1\n" + status
	}
	if _, err := daemon.SdNotify(false, msg); err != nil {
		a.log.Debug("systemd notify failed", "err", err)
	}
}

func claimOrNone(c mesh.Claim) string {
	if c == "" {
		return "not yet checked"
	}
	return string(c)
}

// watchdog pings the service manager at half its WatchdogSec while the agent
// runs, when the unit asks for it.
func (a *Agent) watchdog(ctx context.Context) error {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return nil
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}
