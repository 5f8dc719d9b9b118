package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ikto-mesh/ikto/integration/bench/agentstats"
	"github.com/ikto-mesh/ikto/integration/harness"
)

// MeshConfig sizes the real-mesh scenario.
type MeshConfig struct {
	Hosts    int // agents launched together
	Launches int // times the whole mesh is launched from an empty bucket
	Joins    int // hosts that join the running mesh, one at a time
	Restarts int // agents of the running mesh restarted, one at a time
}

// Polling of the devices: every read is answered by the agent that owns the
// device, and costs it CPU that the launch's agents share. Launches are
// polled every 10 ms, as 0.3.0's harness polled its devices (the reference
// figures); a join is polled tightly only from the moment its claim is in
// the bucket.
const (
	launchPoll    = 10 * time.Millisecond
	joinPoll      = time.Millisecond
	meshTimeout   = time.Minute
	meshBucket    = "ikto-mesh"
	meshPingStart = 1000 // ICMP echo ids: meshPingStart + host index
)

// meshRun holds one scenario's world and its observers.
type meshRun struct {
	log     *slog.Logger
	w       *world
	kv      jetstream.KeyValue
	bins    *Binaries
	hosts   []*harness.Host
	joiners []*harness.Host
	poll    *devicePoller
	pingers []*pinger
	agents  []*harness.Agent
	// joinPingers ping from each joiner.
	joinPingers map[*harness.Host]*pinger
}

// Mesh launches Hosts real ikto-agent processes (userspace WireGuard), each
// in its own network namespace, against a pre-created bucket, and measures
// the launch → every device lists every peer, and → every ordered pair
// answers a ping over WireGuard; then Joins hosts join the running mesh one
// after another (claim in the bucket → on every device); and the agents'
// peak RSS.
func Mesh(ctx context.Context, bins *Binaries, mc MeshConfig, log *slog.Logger) (figs []Figure, err error) {
	m, err := newMeshRun(ctx, bins, mc)
	if err != nil {
		return nil, err
	}
	m.log = log
	defer func() { err = errors.Join(err, m.close()) }()

	launched, err := m.launches(ctx, mc.Launches, false)
	if err != nil {
		return nil, err
	}
	var listAll, listEach, pingAll, pingEach, cpu []float64
	phases := make([][]float64, len(launchPhases))
	for _, r := range launched {
		listAll = append(listAll, slices.Max(r.listed))
		listEach = append(listEach, r.listed...)
		for i := range phases {
			phases[i] = append(phases[i], r.phases[i]...)
		}
		pingAll = append(pingAll, r.allPairs)
		pingEach = append(pingEach, r.pairs...)
		cpu = append(cpu, r.cpu...)
	}
	var claimed, started, endpoint, answered []float64
	for _, j := range m.joiners {
		r, err := m.join(ctx, j)
		if err != nil {
			return nil, fmt.Errorf("join of %s: %w", j.Name, err)
		}
		claimed, started, answered = append(claimed, r.fromClaim), append(started, r.fromStart), append(answered, r.answered)
		endpoint = append(endpoint, r.endpoint)
	}
	var restarted []float64
	for i := range mc.Restarts {
		d, err := m.restart(ctx, i%len(m.hosts))
		if err != nil {
			return nil, fmt.Errorf("restart %d: %w", i+1, err)
		}
		restarted = append(restarted, d)
	}
	peak, anon, err := m.memory()
	if err != nil {
		return nil, err
	}
	// The same launches on devices started beforehand (an external
	// wireguard-go each agent adopts), as 0.3.0's harness measured: what is
	// left is the agents' own start-up.
	preLaunched, err := m.launches(ctx, mc.Launches, true)
	if err != nil {
		return nil, err
	}
	var preListAll []float64
	for _, r := range preLaunched {
		preListAll = append(preListAll, slices.Max(r.listed))
	}
	n := fmt.Sprintf("%d hosts", mc.Hosts)
	figs = []Figure{
		NewFigure("netns mesh", n+": launch → every device lists every peer", "ms", listAll, AtMost(StatMedian, 100)).withRef("117 ms"),
		NewFigure("netns mesh", n+": launch → a device lists every peer, each", "ms", listEach, nil),
	}
	for i, p := range launchPhases {
		figs = append(figs, NewFigure("netns mesh", n+": launch → an agent "+p.what+", each", "ms", phases[i], nil))
	}
	return append(figs, []Figure{
		NewFigure("netns mesh", n+", devices pre-started (as 0.3.0's harness): launch → every device lists every peer", "ms", preListAll, nil).withRef("117 ms"),
		NewFigure("netns mesh", n+": launch → all pairs answer ping", "ms", pingAll, AtMost(StatP99, 1000)),
		NewFigure("netns mesh", n+": launch → a pair answers ping, each", "ms", pingEach, nil),
		NewFigure("netns mesh", n+": agent CPU time, exec → mesh listed", "ms", cpu, nil),
		NewFigure("netns mesh", fmt.Sprintf("join of host %d: claim → on every device (its prefix routed)", mc.Hosts+1), "ms", claimed, AtMost(StatMedian, 10)).withRef("15–29 ms"),
		NewFigure("netns mesh", fmt.Sprintf("join of host %d: agent start → on every device (its prefix routed)", mc.Hosts+1), "ms", started, nil),
		NewFigure("netns mesh", fmt.Sprintf("join of host %d: claim → its endpoint on every device", mc.Hosts+1), "ms", endpoint, nil),
		NewFigure("netns mesh", fmt.Sprintf("join of host %d, pings both ways from its start: claim → every pair answers", mc.Hosts+1), "ms", answered, AtMost(StatMedian, 300)),
		NewFigure("netns mesh", "agent restarted (new process, same key, new embedded device): start → its pairs answer again", "ms", restarted, AtMost(StatMedian, 300)),
		NewFigure("netns mesh", fmt.Sprintf("agent peak RSS, %d peers, userspace device incl.", mc.Hosts-1), "MB", peak, AtMost(StatMax, 20)).withRef("15.6 + 5.3 MB"),
		NewFigure("netns mesh", fmt.Sprintf("agent RSS, anonymous (not the binary), %d peers", mc.Hosts-1), "MB", anon, nil),
	}...), nil
}

func (f Figure) withRef(ref string) Figure {
	f.Reference = ref
	return f
}

func newMeshRun(ctx context.Context, bins *Binaries, mc MeshConfig) (m *meshRun, err error) {
	m = &meshRun{bins: bins}
	// Pinned neighbours: ARP on the bridge is not ikto's to measure.
	if m.w, err = newWorld(harness.NetworkOptions{StaticNeighbours: true}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.close())
		}
	}()
	// A deployed mesh has its bucket; the launch measures the agents.
	if m.kv, err = m.w.bucket(ctx, meshBucket); err != nil {
		return nil, err
	}
	for i := range mc.Hosts {
		h, err := m.w.net.AddHost(fmt.Sprintf("h%02d", i+1))
		if err != nil {
			return nil, err
		}
		m.hosts = append(m.hosts, h)
		p, err := newPinger(h, meshPingStart+i)
		if err != nil {
			return nil, err
		}
		m.pingers = append(m.pingers, p)
	}
	m.joinPingers = map[*harness.Host]*pinger{}
	for i := range mc.Joins {
		h, err := m.w.net.AddHost(fmt.Sprintf("j%d", i+1))
		if err != nil {
			return nil, err
		}
		m.joiners = append(m.joiners, h)
		p, err := newPinger(h, meshPingStart+mc.Hosts+i)
		if err != nil {
			return nil, err
		}
		m.joinPingers[h] = p
	}
	m.poll, err = newDevicePoller()
	return m, err
}

func (m *meshRun) close() error {
	var errs []error
	for _, p := range m.pingers {
		errs = append(errs, p.close())
	}
	for _, p := range m.joinPingers {
		errs = append(errs, p.close())
	}
	if m.poll != nil {
		errs = append(errs, m.poll.close())
	}
	if m.w != nil {
		errs = append(errs, m.w.close())
	}
	return errors.Join(errs...)
}

// start runs an agent on h with the default resync period (the harness's
// 2 s is for tests) and returns it.
func (m *meshRun) start(h *harness.Host) (*harness.Agent, error) {
	cfg := h.Config(m.w.nats.URL(), meshBucket)
	cfg.ResyncInterval = ""
	return h.StartAgent(m.bins.Binaries, cfg)
}

// exited reports the first of agents that stopped, with its log.
func exited(agents ...*harness.Agent) func() error {
	return func() error {
		for _, a := range agents {
			if code, ok := a.ExitCode(); ok {
				return fmt.Errorf("%s exited with %d:\n%s", a.Name, code, a.LogTail(15))
			}
		}
		return nil
	}
}

// launchResult is one launch, in ms after it.
type launchResult struct {
	phases   [][]float64 // per launchPhases entry, when each agent logged it
	listed   []float64   // each device listed every other host
	pairs    []float64   // each ordered pair first answered a ping
	allPairs float64     // the last pair answered
	cpu      []float64   // CPU time each agent had used when every device listed every host
}

// launch starts every host's agent at once and returns, in ms after the
// start, when each device listed every other host, and when the last pair
// answered a ping.
func (m *meshRun) launch(ctx context.Context) (l launchResult, err error) {
	m.agents = make([]*harness.Agent, len(m.hosts))
	var g errgroup.Group
	start := time.Now()
	for i, h := range m.hosts {
		g.Go(func() (err error) {
			m.agents[i], err = m.start(h)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return l, err
	}
	pinged := make(chan error, 1)
	var lastReply time.Time
	go func() {
		var pg errgroup.Group
		replies := make([]time.Time, len(m.pingers))
		for i, p := range m.pingers {
			pg.Go(func() (err error) {
				replies[i], err = p.pingUntilAnswered(ctx, m.privateAddrs(p.host), meshTimeout)
				return err
			})
		}
		err := pg.Wait()
		if err == nil {
			lastReply = slices.MaxFunc(replies, time.Time.Compare)
		}
		pinged <- err
	}()
	listed, err := m.poll.waitUntil(ctx, m.hosts, launchPoll, meshTimeout, func(h *harness.Host, v map[string]harness.PeerView) bool {
		return listsExactly(expected(h, m.hosts))(h, v)
	}, exited(m.agents...))
	// What each agent spent to get there, before the pings add to it.
	for _, a := range m.agents {
		cpu, cerr := ProcessCPU(a.PID)
		err = errors.Join(err, cerr)
		l.cpu = append(l.cpu, ms(cpu))
	}
	if perr := <-pinged; err == nil {
		err = perr
	}
	if err != nil {
		return l, err
	}
	for _, t := range listed {
		l.listed = append(l.listed, ms(t.Sub(start)))
	}
	l.pairs, l.allPairs = m.pairReplies(start), ms(lastReply.Sub(start))
	l.phases = make([][]float64, len(launchPhases))
	for _, a := range m.agents {
		at, err := logTimes(a.Logs())
		if err != nil {
			return l, fmt.Errorf("%s: %w", a.Name, err)
		}
		for i, p := range launchPhases {
			var first time.Time
			for _, msg := range p.msgs {
				if t, ok := at[msg]; ok && (first.IsZero() || t.Before(first)) {
					first = t
				}
			}
			if first.IsZero() {
				return l, fmt.Errorf("%s logged none of %q:\n%s", a.Name, p.msgs, a.LogTail(20))
			}
			l.phases[i] = append(l.phases[i], ms(first.Sub(start)))
		}
	}
	return l, nil
}

// launchPhases are the lines an agent logs on its way to its first device
// write, so that a launch shows where its time goes (docs/performance.md).
var launchPhases = []struct {
	what string
	msgs []string // the first of them marks it
}{
	{"is running its main (process, Go runtime and package init)", []string{"starting"}},
	{"is connected to NATS", []string{"connected to NATS"}},
	{"has claimed its prefix", []string{"claimed prefix"}},
	{"has its device open", []string{"wireguard device open"}},
	{"has written its first peer", []string{"peers configured", "peer added"}},
}

// logTimes is when each message of an agent's text log first appeared.
func logTimes(logs string) (map[string]time.Time, error) {
	at := map[string]time.Time{}
	for line := range strings.Lines(logs) {
		ts, rest, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if !ok || !strings.HasPrefix(line, "time=") {
			continue
		}
		_, msg, ok := strings.Cut(rest, "msg=")
		if !ok {
			continue
		}
		if strings.HasPrefix(msg, `"`) {
			msg, _, _ = strings.Cut(msg[1:], `"`)
		} else {
			msg, _, _ = strings.Cut(strings.TrimSpace(msg), " ")
		}
		if _, seen := at[msg]; seen {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, fmt.Errorf("log line %q: %w", strings.TrimSpace(line), err)
		}
		at[msg] = t
	}
	return at, nil
}

// pairReplies is, for every ordered pair, when it first answered a ping (in
// ms after start); each is logged at debug level.
func (m *meshRun) pairReplies(start time.Time) []float64 {
	var out []float64
	for _, p := range m.pingers {
		p.mu.Lock()
		for _, h := range m.hosts {
			if t, ok := p.first[h.PrivateAddress]; ok && h != p.host {
				out = append(out, ms(t.Sub(start)))
				m.log.Debug("first ping reply", "from", p.host.Name, "to", h.Name, "after", t.Sub(start).Round(time.Millisecond))
			}
		}
		p.mu.Unlock()
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// privateAddrs are the addresses of every host but from (nil: every host).
func (m *meshRun) privateAddrs(from *harness.Host) []netip.Addr {
	var out []netip.Addr
	for _, h := range m.hosts {
		if h != from {
			out = append(out, h.PrivateAddress)
		}
	}
	return out
}

// launches launches the whole mesh n times, each from an empty bucket, on
// embedded devices or, with preStarted, on external ones started before the
// clock starts.
func (m *meshRun) launches(ctx context.Context, n int, preStarted bool) ([]launchResult, error) {
	var out []launchResult
	for l := range n {
		if m.agents != nil {
			if err := m.reset(ctx); err != nil {
				return nil, err
			}
		}
		if preStarted {
			if err := m.startDevices(ctx); err != nil {
				return nil, err
			}
		}
		r, err := m.launch(ctx)
		if err != nil {
			return nil, fmt.Errorf("launch %d (devices pre-started: %t): %w", l+1, preStarted, err)
		}
		m.log.Info("mesh launched", "hosts", len(m.hosts), "devices_pre_started", preStarted,
			"listed_ms", slices.Max(r.listed), "pinged_ms", r.allPairs)
		out = append(out, r)
	}
	return out, nil
}

// startDevices starts every host's external wireguard-go device, for the
// agents to adopt.
func (m *meshRun) startDevices(ctx context.Context) error {
	var g errgroup.Group
	for _, h := range m.hosts {
		g.Go(func() error {
			_, err := h.StartExternalDevice(ctx)
			return err
		})
	}
	return g.Wait()
}

// reset stops every agent and empties the bucket, for the next launch.
func (m *meshRun) reset(ctx context.Context) error {
	if err := m.w.net.StopProcesses(); err != nil {
		return err
	}
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", meshBucket, err)
	}
	for k := range keys.Keys() {
		if err := m.kv.Delete(ctx, k); err != nil {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	for _, p := range m.pingers {
		p.reset()
	}
	return nil
}

// memory is each running agent's peak and anonymous RSS, in MB.
func (m *meshRun) memory() (peak, anon []float64, err error) {
	for _, a := range m.agents {
		mem, err := agentstats.ReadMemory(a.PID)
		if err != nil {
			return nil, nil, err
		}
		peak, anon = append(peak, mb(mem.PeakRSS)), append(anon, mb(mem.AnonRSS))
	}
	return peak, anon, nil
}
