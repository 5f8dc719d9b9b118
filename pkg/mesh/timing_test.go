package mesh

import "testing"

// The relations timing.go's values must keep.
func TestTimingRelations(t *testing.T) {
	for _, r := range []struct {
		what string
		ok   bool
	}{
		{"a quiet end's grace outlasts the other end's attempts", quietGrace > contactBound},
		{"the first retry comes before the bound", contactRetry < contactBound && contactRetryMax <= contactBound},
		{"the device is read no faster than contacts are retried", contactPollMin >= contactRetry},
		{"a suspected crossing is confirmed sooner than the next ordinary look", crossingConfirm < contactPollMin},
		{"a refusal counts only while its sender waits for this end", refusedWithin > 0 && refusedWithin < wireGuardRekeyTimeout},
		{"a live path answers before it counts as unheard", Unheard > wireGuardKeepaliveTimeout},
		{"a peer is unheard within two heartbeats, so a heartbeat reports it", Unheard < 2*HeartbeatEvery},
		{"one lost heartbeat does not make a host offline", OnlineWithin > 2*HeartbeatEvery},
		{"a twin's beat missed between two of ours does not end it", TwinHold > 2*HeartbeatEvery},
	} {
		if !r.ok {
			t.Errorf("timing: %s does not hold", r.what)
		}
	}
}
