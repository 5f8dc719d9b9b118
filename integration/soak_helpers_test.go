package integration_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// The soak keeps its own few helpers rather than borrow the scenarios': it
// runs for minutes on its own world, and the scenarios' helpers change with
// them.
const (
	// soakBucket is the agents' bucket (nats_kv).
	soakBucket = "ikto-mesh"
	// soakConvergeTimeout bounds the waits for the first mesh and the
	// agents' bucket.
	soakConvergeTimeout = 30 * time.Second
	// soakPingEvery is the steady pingers' interval: 20 a second.
	soakPingEvery = 50 * time.Millisecond
)

// startSoakPingers pings every ordered pair of hosts over WireGuard 20
// times a second, for the loss figures of the chaos.
func startSoakPingers(t *testing.T, hosts []*harness.Host) []*harness.Pinger {
	t.Helper()
	var out []*harness.Pinger
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			p, err := from.StartPinger("soak-ping-"+to.Name, to.PrivateAddress, soakPingEvery)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
	}
	return out
}

// soakPairLoss is what a pinger between two steady hosts saw.
type soakPairLoss struct {
	from, to string
	report   harness.PingReport
}

func (l soakPairLoss) String() string {
	return fmt.Sprintf("%d sent, %d lost, longest gap %s", l.report.Sent, len(l.report.Lost), l.report.LongestGap.Round(time.Millisecond))
}

// stopSoakPingers stops the pingers and returns what each saw.
func stopSoakPingers(t *testing.T, ps []*harness.Pinger, names map[string]string) []soakPairLoss {
	t.Helper()
	var out []soakPairLoss
	for _, p := range ps {
		r, err := p.Stop()
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, soakPairLoss{from: p.From.Name, to: names[p.To.String()], report: r})
	}
	return out
}
