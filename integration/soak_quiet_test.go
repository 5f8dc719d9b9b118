package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// soakQuietTimeout bounds the wait for the mesh to settle once the chaos is
// over: agents restarted last write their records back, and a bucket made
// again is written back whole.
const soakQuietTimeout = 90 * time.Second

// soakQuiet is what the end of a soak measured.
type soakQuiet struct {
	heal        time.Duration // chaos over → quiet
	pings       []soakPairPing
	lossFigures []soakPairLoss
	leaks       []soakLeakRow
	// applied, intruders and unnamed are the peer applications the log
	// audit read, those of intruder records, and those logged without a
	// name.
	applied, intruders, unnamed int
}

// quiet ends the chaos: every server and killed agent comes back, and the
// mesh must settle — every running agent synced with its claim held, every
// device listing exactly the mesh, every record back, every evicted agent
// gone with 4 — within soakQuietTimeout. Then every pair pings, and the agents
// that lived through the soak are checked for leaks.
func (s *soak) quiet() soakQuiet {
	end := time.Now()
	s.note("chaos over: starting every server and agent that is down")
	if err := s.nats.startAll(); err != nil {
		s.t.Fatalf("restart NATS after the chaos: %v", err)
	}
	s.runDue(true)
	var (
		q       soakQuiet
		waiting = map[string]time.Duration{} // what kept the mesh from quiet, and since when
	)
	err := testkit.Poll(context.Background(), soakQuietTimeout, func(ctx context.Context) error {
		s.drainExits()
		err := s.settledMesh(ctx)
		if err != nil {
			reason := strings.SplitN(err.Error(), "\n", 2)[0]
			if _, ok := waiting[reason]; !ok && len(waiting) < 6 {
				waiting[reason] = time.Since(end)
			}
		}
		return err
	})
	if err != nil {
		s.model.violate("the mesh did not settle within %s of the chaos: %v", soakQuietTimeout, err)
		q.heal = -1
		return q
	}
	quietAt := time.Now()
	q.heal = quietAt.Sub(end)
	var why []string
	for _, r := range soakSortedKeys(waiting) {
		why = append(why, fmt.Sprintf("%q first seen +%s", r, waiting[r].Round(time.Millisecond)))
	}
	s.note("quiet after %s; waited on: %s", q.heal.Round(time.Millisecond), strings.Join(why, "; "))
	q.pings = s.pingMatrix(s.live(), quietAt)
	for _, p := range q.pings {
		switch {
		case p.err != nil:
			s.model.violate("%s → %s: no reply within %s of quiet: %v", p.from, p.to, soakPingWait, p.err)
		case p.took > s.cfg.pingBound:
			from := map[bool]string{false: "quiet", true: "its start (the second direction)"}[p.reverse]
			s.model.violate("%s → %s: first reply %s after %s, more than %s", p.from, p.to,
				p.took.Round(time.Millisecond), from, s.cfg.pingBound)
		}
	}
	q.leaks = s.checkLeaks()
	return q
}

// settledMesh is nil once the mesh is quiet.
func (s *soak) settledMesh(ctx context.Context) error {
	live := s.live()
	expect := soakHarnessHosts(live)
	// A host whose agent failed keeps its record, as a crashed host does:
	// the others keep routing it.
	for _, h := range s.hosts {
		if own, _ := s.holdsOwn(h); h.state == soakFailed && own {
			expect = append(expect, h.Host)
		}
	}
	for _, h := range s.hosts {
		if h.state == soakEvicted && h.agent != nil && !h.agent.Exited() {
			return fmt.Errorf("evicted %s's agent (pid %d) still runs", h.Name, h.agent.PID)
		}
	}
	for _, h := range live {
		st, err := h.Status(ctx)
		if err != nil {
			return err
		}
		if !st.Synced || !st.NATS.Connected || st.Claim != "held" {
			return fmt.Errorf("%s: synced %v, nats connected %v, claim %q, state %q", h.Name, st.Synced, st.NATS.Connected, st.Claim, st.State)
		}
		if err := harness.CheckDevice(h.Host, expect); err != nil {
			return err
		}
		if s.cfg.deviceFaults && !soakLinkUp(h) {
			return fmt.Errorf("%s's device %s is not up", h.Name, h.DevName)
		}
		if own, known := s.holdsOwn(h); !own || !known {
			return fmt.Errorf("%s's record is not back at %s", h.Name, peer.Key(h.Prefix()))
		}
	}
	return s.oldClaimsReleased(ctx, live)
}

// oldClaimsReleased is nil when no re-addressed host's own record is left
// at a prefix it moved away from. A forged copy of its key there is not its
// record: it stays, rejected, as the agents leave it.
func (s *soak) oldClaimsReleased(ctx context.Context, live []*soakHost) error {
	for _, h := range live {
		for _, old := range h.moved {
			r, err := s.bucket.Record(ctx, old)
			if err == nil && r.PublicKey == h.PublicKey.String() && r.Name == h.Name {
				return fmt.Errorf("%s's old claim %s is still in the bucket", h.Name, old)
			}
		}
	}
	return nil
}

// soakPingWait bounds one pair's wait for a first reply after quiet: far past
// the bound, so that a slow pair's time is measured, not just failed.
const soakPingWait = 15 * time.Second

// soakPairPing is how long after quiet one host first reached another.
type soakPairPing struct {
	from, to string
	took     time.Duration
	err      error
	reverse  bool // the second direction, measured from its own start
}

var soakReplyAt = regexp.MustCompile(`\[(\d+)\.(\d+)\] \d+ bytes from`)

// pingMatrix checks that every pair of hosts reaches the other, and
// measures from since how long each took: every ordered pair at once, so
// both ends of a pair that has no session initiate together, as traffic
// does after a restart. WireGuard alone would then stall such a pair for its
// 5 s REKEY_TIMEOUT (each end consumes the other's initiation and drops the
// response to its own); the agent's first-contact orchestration exists to
// prevent that, and this is where the soak holds it to it. With
// IKTO_SOAK_PING_BOTH=0 each pair is pinged from one end first (an echo
// reply proves both directions) and then from the other, which measures
// reachability without the crossing.
func (s *soak) pingMatrix(hosts []*soakHost, since time.Time) []soakPairPing {
	var first, second [][2]*soakHost
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			if s.rng.IntN(2) == 0 {
				a, b = b, a
			}
			first = append(first, [2]*soakHost{a, b})
			if s.cfg.pingBoth {
				first = append(first, [2]*soakHost{b, a})
			} else {
				second = append(second, [2]*soakHost{b, a})
			}
		}
	}
	out := soakPingPairs(first, since)
	if len(second) > 0 {
		for _, p := range soakPingPairs(second, time.Now()) {
			p.reverse = true
			out = append(out, p)
		}
	}
	return out
}

// soakPingPairs pings every pair at once, ten echo requests a second until the
// first reply, and measures each pair's first reply from since.
func soakPingPairs(pairs [][2]*soakHost, since time.Time) []soakPairPing {
	var (
		mu  sync.Mutex
		out []soakPairPing
		wg  sync.WaitGroup
	)
	for _, pair := range pairs {
		from, to := pair[0], pair[1]
		wg.Go(func() {
			p := soakPairPing{from: from.Name, to: to.Name}
			ctx, cancel := context.WithTimeout(context.Background(), soakPingWait+5*time.Second)
			defer cancel()
			text, err := from.Exec(ctx, "ping", "-n", "-D", "-c1", "-i0.1",
				"-w"+strconv.Itoa(int(soakPingWait/time.Second)), to.PrivateAddress.String())
			if m := soakReplyAt.FindStringSubmatch(text); err == nil && m != nil {
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				usec, _ := strconv.ParseInt(m[2], 10, 64)
				p.took = time.Unix(sec, usec*1000).Sub(since)
			} else if err == nil {
				err = errors.New("no reply line in ping's output")
			}
			p.err = err
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// soakLeakSample is one agent's resources at one moment.
type soakLeakSample struct {
	pid, fds, goroutines, peers int
}

// soakSampleLeak reads h's agent three times, 100 ms apart, and keeps the
// smallest counts: the soak's own status and metrics requests, and a
// heartbeat or resync in flight, add a descriptor or a goroutine for a
// moment.
func soakSampleLeak(ctx context.Context, h *soakHost) (soakLeakSample, error) {
	out := soakLeakSample{pid: h.agent.PID, fds: -1, goroutines: -1}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := range 3 {
		if i > 0 {
			<-tick.C
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", out.pid))
		if err != nil {
			return out, fmt.Errorf("descriptors of %s's agent: %w", h.Name, err)
		}
		g, err := metricValue(ctx, h.SocketPath, "go_goroutines")
		if err != nil {
			return out, err
		}
		dev, err := h.Device()
		if err != nil {
			return out, err
		}
		peers := dev.Peers
		out.fds = soakMinPositive(out.fds, len(fds))
		out.goroutines = soakMinPositive(out.goroutines, int(g))
		out.peers = len(peers)
	}
	return out, nil
}

func soakMinPositive(a, b int) int {
	if a < 0 {
		return b
	}
	return min(a, b)
}

// Leak tolerances. wireguard-go runs two goroutines per peer (its
// sequential sender and receiver), so the goroutine budget follows the
// peer count; soakGoroutineSlack covers what comes and goes (a repair or
// heartbeat in flight, an HTTP handler, nats.go's reconnect loop). A leak
// of one goroutine or descriptor per NATS reconnect, restart of the watch
// or device read would exceed these within a few dozen faults.
const (
	soakGoroutinesPerPeer = 2
	soakGoroutineSlack    = 10
	soakFDSlack           = 4
)

// soakLeakRow is one agent's leak check.
type soakLeakRow struct {
	host       string
	warm, end  soakLeakSample
	reconnects float64
	verdict    string
}

// checkLeaks compares, for each agent that ran from the warm-up to now
// without a restart, its descriptors and goroutines with the baseline.
func (s *soak) checkLeaks() []soakLeakRow {
	var rows []soakLeakRow
	for _, h := range s.hosts {
		if h.baseline == nil || h.state != soakRunning || h.agent.PID != h.baseline.pid {
			continue
		}
		end, err := soakSampleLeak(context.Background(), h)
		if err != nil {
			s.model.violate("leak check of %s: %v", h.Name, err)
			continue
		}
		r := soakLeakRow{host: h.Name, warm: *h.baseline, end: end, verdict: "ok"}
		r.reconnects, _ = metricValue(context.Background(), h.SocketPath, "ikto_nats_reconnects_total")
		gBudget := r.warm.goroutines + soakGoroutinesPerPeer*(end.peers-r.warm.peers) + soakGoroutineSlack
		if end.goroutines > gBudget {
			r.verdict = fmt.Sprintf("goroutines %d > %d", end.goroutines, gBudget)
		}
		if end.fds > r.warm.fds+soakFDSlack {
			r.verdict = fmt.Sprintf("descriptors %d > %d", end.fds, r.warm.fds+soakFDSlack)
		}
		if r.verdict != "ok" {
			s.model.violate("agent on %s grew: %s (warm-up %+v, end %+v)", h.Name, r.verdict, r.warm, end)
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		s.model.violate("no agent lived through the soak: nothing to check for leaks")
	}
	return rows
}
