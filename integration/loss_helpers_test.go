package integration_test

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// lossPinger is `ping -i 0.05` (20 a second) from one host to another's
// private address over WireGuard, counting what goes missing.
type lossPinger struct {
	from, to *harness.Host
	proc     *harness.Process
}

// startLossPingers pings every ordered pair of hosts 20 times a second until
// stopped. Call it once the pairs answer.
func startLossPingers(t *testing.T, hosts []*harness.Host) []*lossPinger {
	t.Helper()
	var out []*lossPinger
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			p, err := from.Start("ping20-"+to.Name, "ping", "-n", "-D", "-i", "0.05", "-W", "1", to.PrivateAddress.String())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, &lossPinger{from: from, to: to, proc: p})
		}
	}
	return out
}

var seqReply = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .* icmp_seq=(\d+) `)

// loss is what one pinger saw.
type loss struct {
	replies, lost int
	gap           time.Duration
}

func (l loss) String() string {
	return fmt.Sprintf("%d replies, %d lost, longest gap %s", l.replies, l.lost, l.gap.Round(time.Millisecond))
}

// stop ends the pinger and reports the echo requests between the first and
// the last reply that got no answer, and the longest time between replies.
func (p *lossPinger) stop(t *testing.T) loss {
	t.Helper()
	if err := p.proc.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	var (
		l        loss
		seqs     = map[int]bool{}
		lo, hi   = -1, -1
		prev, at time.Time
	)
	sc := bufio.NewScanner(strings.NewReader(p.proc.Logs()))
	for sc.Scan() {
		m := seqReply.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		seq, _ := strconv.Atoi(m[3])
		at = time.Unix(sec, usec*1000)
		if !prev.IsZero() {
			l.gap = max(l.gap, at.Sub(prev))
		}
		prev = at
		seqs[seq] = true
		if lo < 0 || seq < lo {
			lo = seq
		}
		hi = max(hi, seq)
	}
	l.replies = len(seqs)
	if lo >= 0 {
		// icmp_seq wraps at 65536, far beyond what a test sends at 20/s.
		l.lost = hi - lo + 1 - len(seqs)
	}
	return l
}

// stopAll stops every pinger, logs each pair's figures and returns the
// total lost.
func stopAll(t *testing.T, ps []*lossPinger) int {
	t.Helper()
	total := 0
	for _, p := range ps {
		l := p.stop(t)
		t.Logf("%s → %s: %s", p.from.Name, p.to.Name, l)
		if l.replies == 0 {
			t.Errorf("%s → %s: no reply at all\n%s", p.from.Name, p.to.Name, p.proc.LogTail(5))
		}
		total += l.lost
	}
	return total
}
