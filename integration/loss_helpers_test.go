package integration_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// lossInterval is how often the loss pingers send: 20 a second.
const lossInterval = 50 * time.Millisecond

// pingerRuns numbers the calls of startLossPingers: a pinger's log is
// named after it, and a second run under the same name would read the
// first one's replies too.
var pingerRuns atomic.Int64

// startLossPingers pings every ordered pair of hosts over WireGuard every
// interval until stopped. Call it once the pairs answer.
func startLossPingers(t *testing.T, hosts []*harness.Host, interval ...time.Duration) []*harness.Pinger {
	t.Helper()
	every := lossInterval
	if len(interval) > 0 {
		every = interval[0]
	}
	run := pingerRuns.Add(1)
	var out []*harness.Pinger
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			p, err := from.StartPinger(fmt.Sprintf("ping%d-%s-%s", run, from.Name, to.Name), to.PrivateAddress, every)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
	}
	// A ping starts by asking for a route: a fault the test makes right
	// away (a device deleted) would end it before it sent anything, with
	// no figures. Each is running once it has its first reply.
	for _, p := range out {
		if err := p.WaitReplies(context.Background(), 1, pingTimeout); err != nil {
			t.Fatalf("pinger %s → %s: no first reply: %v", p.From.Name, p.To, err)
		}
	}
	return out
}

// stopAll stops every pinger, logs each pair's figures and returns the
// total lost and the longest time any pair went without a reply.
func stopAll(t *testing.T, ps []*harness.Pinger) (lost int, gap time.Duration) {
	t.Helper()
	for _, p := range ps {
		r, err := p.Stop()
		if err != nil {
			t.Fatal(err)
		}
		to := p.To.String()
		t.Logf("%s → %s: %d sent, %d lost, longest gap %s", p.From.Name, to, r.Sent, len(r.Lost), r.LongestGap.Round(time.Millisecond))
		if r.First.IsZero() {
			t.Errorf("%s → %s: no reply at all", p.From.Name, to)
		}
		lost += len(r.Lost)
		gap = max(gap, r.LongestGap)
	}
	return lost, gap
}
