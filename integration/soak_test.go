package integration_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// TestSoak is issue 11's chaos soak. On a mesh of real agents in network
// namespaces it injects, at random and for a bounded time and count, agent
// SIGKILLs and restarts, NATS server stops and restarts (one server, then a
// 3-server cluster), WireGuard devices deleted under running agents,
// records written as an attacker at live hosts' keys and free ones
// (garbage that breaks a rule, forged copies of a live host's key, valid
// records of fresh "intruder" keys), joins, evictions with the real
// ikto-admin, re-addressed hosts and bucket deletions. A sampler reads every
// device throughout. Then the chaos stops, everything stopped comes back,
// and it checks:
//
//  1. no prefix is routed to two keys, or to a peer inside the host's own
//     prefix, on any device (sampled throughout, and exactly at the end);
//  2. once the mesh is quiet, every pair of live hosts pings within
//     IKTO_SOAK_PING_BOUND (2 s), both ends at once;
//  3. no agent exited but the evicted ones, with 4;
//  4. no device ever listed a garbage record's key, a forged copy (a host's
//     key with a prefix it never claimed) or an evicted key past
//     revokeGrace — sampled, and every peer the agents' logs say they
//     applied. Intruders are valid records, which other agents accept
//     until the victim restores its own: they are counted, not failed;
//  5. the agents that lived through it all hold no more descriptors or
//     goroutines than after the warm-up, allowing for their peers.
//
// It prints the seed, what it injected and the figures. The environment
// tunes it (soak_settings_test.go): IKTO_SOAK (chaos time, default 60 s,
// split between the topologies; `make soak` runs 10 m), IKTO_SOAK_SEED
// (replays a fault sequence), IKTO_SOAK_NATS, IKTO_SOAK_HOSTS,
// IKTO_SOAK_MAX_FAULTS, IKTO_SOAK_SKIP (fault kinds to leave out),
// IKTO_SOAK_DEVICE_FAULTS=0, IKTO_SOAK_PING_BOUND, IKTO_SOAK_PING_BOTH=0.
// A failed run keeps its directory (agents' logs, which the failures point
// into); IKTO_KEEP_DIR=1 keeps it always.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos soak takes minutes")
	}
	cfg := soakSettingsFromEnv(t)
	t.Logf("chaos soak: seed %d, chaos per topology %v; replay: %s",
		cfg.seed, cfg.topologies, cfg.replay())
	if !cfg.deviceFaults {
		t.Logf("device deletions off (%s=0)", envSoakDevice)
	}
	for _, topo := range cfg.topologies {
		t.Run(topo.name, func(t *testing.T) { runSoak(t, cfg, topo) })
	}
}

func runSoak(t *testing.T, cfg soakSettings, topo soakTopology) {
	var (
		suffix      string
		restoreKeep func()
	)
	// Registered first, so it runs last: after the network is gone.
	t.Cleanup(func() {
		if restoreKeep != nil {
			restoreKeep()
		}
		if suffix != "" {
			soakCheckNothingLeft(t, suffix)
		}
	})
	s := newSoak(t, cfg, topo)
	suffix = s.net.Suffix
	// Runs before the network's Close, which reads IKTO_KEEP_DIR.
	t.Cleanup(func() { restoreKeep = soakKeepLogsOnFailure(t, s.net.Dir) })
	t.Logf("%s: seed %d, %d hosts, %s of chaos", topo.name, cfg.topologySeed(topo.name), cfg.hosts, topo.chaos)
	w := s.warmUp()
	stopSampler := runSoakSampler(t.Context(), s.model)
	s.runChaos()
	q := s.quiet()
	stopSampler()
	if samples, _, _ := s.model.sampleCounts(); samples == 0 {
		s.model.violate("the sampler read no device at all: nothing was checked during the chaos")
	}
	q.lossFigures = stopSoakPingers(t, w.pingers, s.addressNames())
	s.auditLogs(&q)
	s.report(q)
	if fails := s.model.failures(); len(fails) > 0 {
		t.Errorf("%d invariant violations (seed %d; replay: %s):\n%s", len(fails), cfg.seed, cfg.replay(),
			soakIndent(soakLines(fails), "  "))
	}
}

// soakKeepLogsOnFailure has the network's Close keep its directory when the test
// failed, and returns what undoes that for the tests after it.
func soakKeepLogsOnFailure(t *testing.T, dir string) (restore func()) {
	if !t.Failed() || os.Getenv(soakKeepDirEnv) != "" {
		return nil
	}
	if err := os.Setenv(soakKeepDirEnv, "1"); err != nil {
		return nil
	}
	t.Logf("the agents' logs stay in %s", dir)
	return func() { _ = os.Unsetenv(soakKeepDirEnv) }
}

// soakKeepDirEnv is the harness's switch that keeps a network's directory.
const soakKeepDirEnv = "IKTO_KEEP_DIR"

// newSoak builds the world: the network, NATS, the starting hosts with
// their agents, the operator's config and the soak's handle on the bucket.
func newSoak(t *testing.T, cfg soakSettings, topo soakTopology) *soak {
	t.Helper()
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	n := harnesstest.Network(t)
	seed := cfg.topologySeed(topo.name)
	s := &soak{
		t: t, cfg: cfg, topo: topo, rng: rand.New(rand.NewPCG(seed, seed>>1|1)), net: n,
		nats: startSoakNATS(t, n, topo.name), bins: bins, start: time.Now(),
		used: map[netip.Prefix]bool{}, exits: make(chan soakExit, 4096), stopped: map[*harness.Agent]bool{},
		stats: soakStats{injected: map[string]int{}, skipped: map[string]int{}},
	}
	s.model = newSoakModel(s.start)
	// Registered after NATS, so it runs before NATS stops: agents stopping
	// at the end do not see their server go first.
	t.Cleanup(s.stopAgents)
	for i := range cfg.hosts {
		h := &soakHost{Host: harnesstest.AddHost(t, n, fmt.Sprintf("s%d", i+1)), state: soakDown, steady: i < 2}
		s.used[h.Prefix()] = true
		s.hosts = append(s.hosts, h)
	}
	for _, h := range s.hosts {
		if err := s.startAgent(h); err != nil {
			t.Fatal(err)
		}
	}
	s.writeOperatorConfig(s.hosts[0])
	s.openBucket()
	return s
}

// addressNames maps each host's private address to its name, for the
// pingers' figures.
func (s *soak) addressNames() map[string]string {
	out := map[string]string{}
	for _, h := range s.hosts {
		out[h.PrivateAddress.String()] = h.Name
	}
	return out
}

// stopAgents stops every agent still running, all at once.
func (s *soak) stopAgents() {
	var wg sync.WaitGroup
	for _, h := range s.hosts {
		if a := h.agent; a != nil && !a.Exited() {
			wg.Go(func() { _ = a.Stop(5 * time.Second) })
		}
	}
	wg.Wait()
}

// warmUp waits for the first mesh, pings every pair (so that every
// session has had its handshake), takes each agent's baseline for the leak
// check, and starts pingers between the steady hosts.
func (s *soak) warmUp() soakWarmUp {
	hosts := soakHarnessHosts(s.hosts)
	testkit.Eventually(s.t, soakConvergeTimeout, "the first mesh", func() error {
		s.drainExits()
		if fails := s.model.failures(); len(fails) > 0 {
			return testkit.Permanent(fmt.Errorf("%s", soakLines(fails)))
		}
		return harness.CheckMesh(hosts)
	})
	pings := s.pingMatrix(s.live(), time.Now())
	for _, p := range pings {
		if p.err != nil {
			s.t.Fatalf("warm-up: %s → %s: %v", p.from, p.to, p.err)
		}
	}
	for _, h := range s.hosts {
		b, err := soakSampleLeak(s.t.Context(), h)
		if err != nil {
			s.t.Fatalf("warm-up baseline of %s: %v", h.Name, err)
		}
		h.baseline = &b
	}
	var steady []*harness.Host
	for _, h := range s.hosts {
		if h.steady {
			steady = append(steady, h.Host)
		}
	}
	s.note("warm-up done: %d hosts meshed", len(hosts))
	return soakWarmUp{pingers: startSoakPingers(s.t, steady)}
}

// soakWarmUp is what the warm-up leaves for the end: the steady pingers.
type soakWarmUp struct {
	pingers []*harness.Pinger
}

// soakLoopTick is how often the fault loop, between two faults, runs the
// recoveries that are due, judges exits and looks for healed devices.
const soakLoopTick = 100 * time.Millisecond

// runChaos injects faults until the chaos time is over or the fault budget
// is spent.
func (s *soak) runChaos() {
	var faults []soakFault
	for _, f := range soakFaults(s.cfg.deviceFaults) {
		if !s.cfg.skip[f.kind] {
			faults = append(faults, f)
		}
	}
	if len(faults) == 0 {
		s.t.Fatalf("%s leaves no fault kind", envSoakSkip)
	}
	var total float64
	for _, f := range faults {
		total += f.weight
	}
	began := time.Now()
	deadline := began.Add(s.topo.chaos)
	tick := time.NewTicker(soakLoopTick)
	defer tick.Stop()
	injected := 0
	for injected < s.cfg.maxFaults {
		next := time.Now().Add(s.between(s.cfg.minGap, s.cfg.maxGap))
		for time.Now().Before(next) {
			<-tick.C
			s.drainExits()
			s.runDue(false)
			s.collectNATS()
			s.checkDeviceHeals()
		}
		if time.Now().After(deadline) {
			break
		}
		// A fault that finds nothing to act on is counted as skipped and
		// another is drawn, a few times at most.
		for range 5 {
			f := soakPickFault(faults, total, s.rng.Float64())
			detail, err := f.inject(s)
			var skip soakSkip
			switch {
			case err == nil:
				s.stats.injected[f.kind]++
				injected++
				s.note("%-13s %s", f.kind, detail)
			case errors.As(err, &skip):
				s.stats.skipped[f.kind]++
				continue
			default:
				s.note("%-13s FAILED: %v", f.kind, err)
				s.model.violate("inject %s: %v", f.kind, err)
			}
			break
		}
	}
	s.stats.chaos = time.Since(began)
}

func soakPickFault(faults []soakFault, total, r float64) soakFault {
	r *= total
	for _, f := range faults {
		if r < f.weight {
			return f
		}
		r -= f.weight
	}
	return faults[len(faults)-1]
}
