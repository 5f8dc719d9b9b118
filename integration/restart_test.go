package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// restartPingInterval is 20 echo requests a second each way: a restart that
// cut traffic for even one interval would lose a packet.
const restartPingInterval = 50 * time.Millisecond

// persistentDevice gives h a device that outlives its agent and returns the
// config that uses it and the backend its status must report: in a kernel
// run (the kernel lane) the agent's own kernel link, elsewhere an external
// wireguard-go started here for the agent to adopt.
func persistentDevice(t *testing.T, m *mesh, h *harness.Host) (config.Config, wgdev.Kind) {
	t.Helper()
	cfg := m.config(h)
	if harness.TestBackend() == wgdev.KindKernel {
		return cfg, wgdev.KindKernel
	}
	requireTool(t, "wireguard-go", "wireguard-go")
	if _, err := h.StartExternalDevice(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.WGBackend = string(wgdev.KindAuto)
	return cfg, wgdev.KindExternal
}

// An agent restarted (SIGTERM), crashed (SIGKILL) or upgraded (another
// binary) on a kernel or an adopted external device loses no packet between
// another host and this one, in either direction.
func TestRestartLosesNoPacket(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	alpha, bravo := hosts[0], hosts[1]
	cfg, backend := persistentDevice(t, m, bravo)
	m.start(alpha)
	m.startWith(bravo, cfg)
	m.waitConverged(hosts)
	m.pingAll(hosts)
	testkit.EventuallyContext(t, convergeTimeout, "bravo's backend", func(ctx context.Context) error {
		return checkBackend(ctx, bravo, backend)
	})
	for _, tc := range restartCases(t, m) {
		t.Run(tc.name, func(t *testing.T) {
			there := startPinger(t, alpha, bravo, "ping-"+tc.name)
			back := startPinger(t, bravo, alpha, "ping-back-"+tc.name)
			waitReplies(t, 20, there, back)
			a := m.bounce(t, hosts, bravo, tc, nil, func(bins *harness.Binaries) *harness.Agent {
				return harnesstest.StartAgent(m.t, bins, bravo, cfg, "--log-level", "debug")
			}, func(ctx context.Context) error { return checkBackend(ctx, bravo, backend) })
			if !strings.Contains(a.Logs(), "adopted=true") {
				t.Errorf("the new agent does not say it adopted the device:\n%s", a.LogTail(20))
			}
			waitReplies(t, 20, there, back)
			for _, p := range []*harness.Pinger{there, back} {
				checkNoLoss(t, p)
			}
		})
	}
}

// An agent on the embedded device, run as a service with the shipped unit's
// fd store, leaves its TUN there when it stops, crashes or is upgraded: the
// link, its address and routes never go (the same link index), and the next
// agent's device runs on it. What the restarted host sends meanwhile waits
// in the TUN; the WireGuard sessions do not survive (docs/contract.md §6), so
// what the other host sends until the new device's handshake may be lost:
// both are measured. `systemctl stop` (the store released) takes the TUN.
func TestEmbeddedDeviceKeepsItsTUNAcrossRestarts(t *testing.T) {
	t.Parallel()
	m, hosts, sm := serviceMesh(t)
	alpha, bravo := hosts[0], hosts[1]
	cfg := m.config(bravo)
	cfg.WGBackend = string(wgdev.KindUserspace)
	// The snapshot puts the peers back before NATS answers (as the
	// packaged config does): the shortest restart there is.
	cfg.StateDir = filepath.Join(bravo.Dir, "state")
	m.start(alpha)
	m.agents[bravo.Name] = harnesstest.StartAgentUnder(t, sm, m.bins, bravo, cfg, "--log-level", "debug")
	m.waitConverged(hosts)
	m.pingAll(hosts)
	want := []string{"tun-" + bravo.DevName}
	if got := sm.Stored(); !slices.Equal(got, want) {
		t.Fatalf("the service manager holds %v; want %v", got, want)
	}
	index := linkIndex(t, bravo)
	for _, tc := range restartCases(t, m) {
		t.Run(tc.name, func(t *testing.T) {
			out := startPinger(t, bravo, alpha, "ping-"+tc.name)
			in := startPinger(t, alpha, bravo, "ping-in-"+tc.name)
			waitReplies(t, 20, out, in)
			m.bounce(t, hosts, bravo, tc, func() {
				if got := linkIndex(t, bravo); got != index {
					t.Fatalf("with the agent gone the TUN is link %d, was %d", got, index)
				}
			}, func(bins *harness.Binaries) *harness.Agent {
				return harnesstest.StartAgentUnder(m.t, sm, bins, bravo, cfg, "--log-level", "debug")
			}, nil)
			checkTUNKept(t, bravo, index, out, in)
		})
	}

	// systemctl stop: the agent exits and the store is released.
	a := m.agents[bravo.Name]
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, a)
	sm.Release()
	testkit.EventuallyContext(t, convergeTimeout, "the TUN to go with the store", func(ctx context.Context) error {
		if out, err := bravo.Exec(ctx, "ip", "link", "show", "dev", bravo.DevName); err == nil {
			return fmt.Errorf("link still there: %s", out)
		}
		return nil
	})
}

// An upgrade without systemd (docs/contract.md §6): a new agent started
// with --replace takes the device over from the running one, which passes
// its TUN and exits 0. The link never goes (its index stays), nothing the
// host sends is lost, and the mesh is whole again. A second agent started
// without --replace is refused, and told of it.
func TestReplaceTakesTheDeviceOverWithoutSystemd(t *testing.T) {
	t.Parallel()
	m, hosts, cfg := embeddedPair(t)
	alpha, bravo := hosts[0], hosts[1]
	m.agents[bravo.Name] = harnesstest.StartAgent(t, m.bins, bravo, cfg, "--log-level", "debug")
	m.waitConverged(hosts)
	index := linkIndex(t, bravo)

	second := harnesstest.StartAgent(t, m.bins, bravo, cfg)
	if code := waitExit(t, second); code == 0 || !strings.Contains(second.Logs(), "--replace") {
		t.Fatalf("a second agent on the device exited %d; want a failure that names --replace:\n%s", code, second.LogTail(5))
	}

	out := startPinger(t, bravo, alpha, "ping-out")
	in := startPinger(t, alpha, bravo, "ping-in")
	waitReplies(t, 20, out, in)
	upgraded, err := harness.CopyBinaries(m.bins, t.TempDir(), harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	old := m.agents[bravo.Name]
	started := time.Now()
	a := harnesstest.StartAgent(t, upgraded, bravo, cfg, "--replace", "--log-level", "debug")
	if code := waitExit(t, old); code != 0 {
		t.Fatalf("the agent taken over from exited %d, want 0:\n%s", code, old.LogTail(10))
	}
	m.agents[bravo.Name] = a
	testkit.EventuallyContext(t, convergeTimeout, "the new agent to sync", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return harness.CheckMesh(hosts)
	})
	t.Logf("taken over, and synced %s after the new agent started", time.Since(started).Round(time.Millisecond))
	if !strings.Contains(a.Logs(), "took the device over from the agent before") {
		t.Errorf("the new agent does not say it took the device over:\n%s", a.LogTail(20))
	}
	checkTUNKept(t, bravo, index, out, in)
}

// embeddedPair is a mesh of alpha, whose agent runs, and bravo, whose
// config (returned) has the embedded device and a state_dir (the packaged
// config's, so a restart puts the peers back before NATS answers): for the
// tests that end and start bravo's agent.
func embeddedPair(t *testing.T) (*mesh, []*harness.Host, config.Config) {
	t.Helper()
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	cfg := m.config(hosts[1])
	cfg.WGBackend = string(wgdev.KindUserspace)
	cfg.StateDir = filepath.Join(hosts[1].Dir, "state")
	m.start(hosts[0])
	return m, hosts, cfg
}

// checkTUNKept checks, once a new agent runs h's embedded device, that the
// device is still link index (its TUN kept, not made again) and that out
// (pings from h) lost nothing — what h sent waited in the TUN for the new
// device — once both out and in answer again; it stops both and logs
// what in (pings to h) lost.
func checkTUNKept(t *testing.T, h *harness.Host, index int, out, in *harness.Pinger) {
	t.Helper()
	if got := linkIndex(t, h); got != index {
		t.Errorf("the new agent's device is link %d, the TUN was %d: made again", got, index)
	}
	waitReplies(t, 20, out, in)
	for _, p := range []*harness.Pinger{out, in} {
		rep, err := p.Stop()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s → %s: %d sent, %d counted, %d lost, longest gap %s",
			p.From.Name, p.To, rep.Sent, rep.Counted, len(rep.Lost), rep.LongestGap.Round(time.Millisecond))
		if p == out && len(rep.Lost) > 0 {
			t.Errorf("%d echo requests from %s lost: %v", len(rep.Lost), h.Name, rep.Lost)
		}
	}
}

// An agent under the unit refuses to hand its device over (a hand-over
// would leave the unit stopped and the new agent unsupervised) and goes
// on; the agent that asked exits 1, saying to restart the unit.
func TestReplaceIsRefusedUnderTheUnit(t *testing.T) {
	t.Parallel()
	m, hosts, cfg := embeddedPair(t)
	bravo := hosts[1]
	sm, err := bravo.NewServiceManager()
	if err != nil {
		t.Fatal(err)
	}
	m.agents[bravo.Name] = harnesstest.StartAgentUnder(t, sm, m.bins, bravo, cfg)
	m.waitConverged(hosts)
	a := harnesstest.StartAgent(t, m.bins, bravo, cfg, "--replace")
	if code := waitExit(t, a); code != 1 || !strings.Contains(a.Logs(), "systemctl restart ikto-agent") {
		t.Fatalf("--replace of an agent under the unit exited %d; want 1, saying to restart the unit:\n%s", code, a.LogTail(5))
	}
	t.Logf("the agent that asked: %s", a.LogTail(1))
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
	m.pingAll(hosts)
}

// linkIndex is the index of h's WireGuard device link.
// The store holds a TUN no device will run on: the shipped unit restarted
// after wg_dev_name changed (a restart keeps the store), and again after the
// link was deleted while no agent ran. Each time the agent starts, on a TUN
// of its own, the mesh forms again, and what the store kept goes with its
// link (docs/contract.md §6); either used to make every restart fail.
func TestTUNTheStoreKeptForNoDeviceIsGivenBack(t *testing.T) {
	t.Parallel()
	m, hosts, sm := serviceMesh(t)
	alpha, bravo := hosts[0], hosts[1]
	m.start(alpha)
	restart := func(change func()) {
		t.Helper()
		if a := m.agents[bravo.Name]; a != nil {
			if err := a.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			waitExit(t, a)
		}
		change()
		cfg := m.config(bravo)
		cfg.WGBackend = string(wgdev.KindUserspace)
		m.agents[bravo.Name] = harnesstest.StartAgentUnder(t, sm, m.bins, bravo, cfg, "--log-level", "debug")
		m.waitConverged(hosts)
		m.pingAll(hosts)
		if got, want := sm.Stored(), []string{"tun-" + bravo.DevName}; !slices.Equal(got, want) {
			t.Errorf("the service manager holds %v; want %v", got, want)
		}
	}
	gone := func(link string) {
		t.Helper()
		testkit.EventuallyContext(t, convergeTimeout, "link "+link+" to go", func(ctx context.Context) error {
			if out, err := bravo.Exec(ctx, "ip", "link", "show", "dev", link); err == nil {
				return fmt.Errorf("still there: %s", out)
			}
			return nil
		})
	}
	restart(func() {})

	old := bravo.DevName
	restart(func() { bravo.DevName = old + "n" })
	gone(old)

	restart(func() {
		if out, err := bravo.Exec(context.Background(), "ip", "link", "del", bravo.DevName); err != nil {
			t.Fatalf("ip link del %s: %v\n%s", bravo.DevName, err, out)
		}
	})
}

// An embedded device's WireGuard sessions go with its agent, and the peers
// keep sending into them, unanswered, until their own timers give up (15 s):
// they start no handshake sooner. So the new device starts every handshake
// itself (docs/contract.md §6), also with the peers it puts back from its
// snapshot, NATS up or down, and when the restarted host sends nothing.
// alpha pings bravo one way at 20/s across a restart of bravo's agent: at
// most a second of pings may be lost (the restart), never the old sessions'
// 15 s.
func TestRestartedDeviceStartsEveryHandshake(t *testing.T) {
	t.Parallel()
	for _, natsDown := range []bool{false, true} {
		t.Run(map[bool]string{false: "NATS up", true: "NATS down"}[natsDown], func(t *testing.T) {
			t.Parallel()
			m, hosts, cfg := embeddedPair(t)
			alpha, bravo := hosts[0], hosts[1]
			m.startWith(bravo, cfg)
			m.waitConverged(hosts)
			m.pingAll(hosts)
			snapshot := filepath.Join(cfg.StateDir, bravo.DevName+".json")
			testkit.Eventually(t, convergeTimeout, "alpha in bravo's snapshot", func() error {
				b, err := os.ReadFile(snapshot)
				if err != nil || !strings.Contains(string(b), alpha.PublicKey.String()) {
					return fmt.Errorf("snapshot without alpha: %v", err)
				}
				return nil
			})
			in := startPinger(t, alpha, bravo, "ping-in")
			waitReplies(t, 20, in)
			if natsDown {
				m.nats.Shutdown()
			}
			stopAgent(t, m.agents[bravo.Name])
			restarted := time.Now()
			m.startWith(bravo, cfg)
			waitReplies(t, 20, in)
			t.Logf("alpha's pings answered again %s after bravo's agent started", time.Since(restarted).Round(time.Millisecond))
			rep, err := in.Stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("alpha → bravo: %d sent, %d lost, longest gap %s", rep.Sent, len(rep.Lost), rep.LongestGap.Round(time.Millisecond))
			if len(rep.Lost) > 20 {
				t.Errorf("%d pings to the restarted host lost (a second is 20): nothing started a handshake with its new device", len(rep.Lost))
			}
		})
	}
}

// serviceMesh is a mesh of alpha and bravo, bravo's agent to run as a
// service of the returned service manager (systemd's part played).
func serviceMesh(t *testing.T) (*mesh, []*harness.Host, *harness.ServiceManager) {
	t.Helper()
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	sm, err := hosts[1].NewServiceManager()
	if err != nil {
		t.Fatal(err)
	}
	return m, hosts, sm
}

// stopAgent stops a as systemd does (SIGTERM), which must exit 0.
func stopAgent(t *testing.T, a *harness.Agent) {
	t.Helper()
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, a); code != 0 {
		t.Fatalf("%s exited %d on SIGTERM, want 0\n%s", a.Name, code, a.LogTail(20))
	}
}

func linkIndex(t *testing.T, h *harness.Host) int {
	t.Helper()
	out, err := h.Exec(context.Background(), "ip", "-o", "link", "show", "dev", h.DevName)
	if err != nil {
		t.Fatalf("link %s on %s: %v", h.DevName, h.Name, err)
	}
	i, _, _ := strings.Cut(out, ":")
	n, err := strconv.Atoi(strings.TrimSpace(i))
	if err != nil {
		t.Fatalf("link index in %q: %v", out, err)
	}
	return n
}

// restartCase is one way an agent goes and a new one comes.
type restartCase struct {
	name   string
	signal syscall.Signal
	bins   *harness.Binaries // the new agent's
}

// restartCases are a restart (SIGTERM), a crash (SIGKILL) and an upgrade
// (SIGTERM, then another binary with the same code).
func restartCases(t *testing.T, m *mesh) []restartCase {
	t.Helper()
	upgraded, err := harness.CopyBinaries(m.bins, t.TempDir(), harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	return []restartCase{{"restart", syscall.SIGTERM, m.bins}, {"crash", syscall.SIGKILL, m.bins}, {"upgrade", syscall.SIGTERM, upgraded}}
}

// bounce ends h's agent as tc says (a SIGTERM must exit 0), runs gone (if
// any) while no agent runs, starts the next with start, and waits until the
// mesh of hosts is whole again and check (if any) holds; it logs how long that took.
func (m *mesh) bounce(t *testing.T, hosts []*harness.Host, h *harness.Host, tc restartCase, gone func(), start func(*harness.Binaries) *harness.Agent, check func(context.Context) error) *harness.Agent {
	t.Helper()
	old := m.agents[h.Name]
	if err := old.Signal(tc.signal); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, old); tc.signal == syscall.SIGTERM && code != 0 {
		t.Fatalf("agent exited %d on SIGTERM, want 0\n%s", code, old.LogTail(20))
	}
	stopped := time.Now()
	if gone != nil {
		gone()
	}
	a := start(tc.bins)
	m.agents[h.Name] = a
	testkit.EventuallyContext(t, convergeTimeout, "the new agent to sync", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if check != nil {
			if err := check(ctx); err != nil {
				return err
			}
		}
		return harness.CheckMesh(hosts)
	})
	t.Logf("agent gone (%s), back and synced after %s", tc.name, time.Since(stopped).Round(time.Millisecond))
	return a
}

func startPinger(t *testing.T, from, to *harness.Host, name string) *harness.Pinger {
	t.Helper()
	p, err := from.StartPinger(name, to.PrivateAddress, restartPingInterval)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitReplies(t *testing.T, n int, ps ...*harness.Pinger) {
	t.Helper()
	for _, p := range ps {
		if err := p.WaitReplies(context.Background(), n, pingTimeout); err != nil {
			t.Fatal(err)
		}
	}
}

// checkNoLoss stops p and fails the test if any echo request went
// unanswered.
func checkNoLoss(t *testing.T, p *harness.Pinger) {
	t.Helper()
	rep, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s → %s: %d sent, %d counted, %d lost, longest gap %s",
		p.From.Name, p.To, rep.Sent, rep.Counted, len(rep.Lost), rep.LongestGap.Round(time.Millisecond))
	if rep.Counted < 40 {
		t.Errorf("only %d echo requests counted: the measurement proves nothing", rep.Counted)
	}
	if len(rep.Lost) > 0 {
		t.Errorf("%s → %s lost %d of %d echo requests across the restart (icmp_seq %v)",
			p.From.Name, p.To, len(rep.Lost), rep.Counted, rep.Lost)
	}
}

// checkBackend is nil when h's agent reports backend.
func checkBackend(ctx context.Context, h *harness.Host, backend wgdev.Kind) error {
	st, err := h.Status(ctx)
	if err != nil {
		return err
	}
	switch st.Backend {
	case string(backend):
		return nil
	case "": // the socket answers before the device is open
		return fmt.Errorf("%s's agent has no device yet (state %q)", h.Name, st.State)
	}
	return testkit.Permanent(fmt.Errorf("%s's agent reports backend %q, want %q", h.Name, st.Backend, backend))
}

// An agent restarted while NATS is down brings its userspace device back
// with its peers from the snapshot in state_dir, and traffic flows before
// NATS returns; then it claims, syncs, and follows later changes.
func TestRestartWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie")
	withState := func(h *harness.Host) config.Config {
		cfg := m.config(h)
		cfg.StateDir = filepath.Join(h.Dir, "state")
		return cfg
	}
	for _, h := range hosts {
		m.startWith(h, withState(h))
	}
	m.waitConverged(hosts)
	bravo := hosts[1]
	snapshot := filepath.Join(bravo.Dir, "state", bravo.DevName+".json")
	testkit.Eventually(t, convergeTimeout, "bravo's snapshot", func() error {
		st, err := os.Stat(snapshot)
		if err != nil {
			return err
		}
		if st.Mode().Perm() != 0o600 {
			return testkit.Permanent(errors.New("snapshot mode is " + st.Mode().String() + ", want -rw-------"))
		}
		return nil
	})

	m.nats.Shutdown()
	stopAgent(t, m.agents[bravo.Name])
	// An embedded userspace device went with its agent: what comes back is
	// the snapshot's. A kernel device stays, with its peers.
	if harness.TestBackend() == wgdev.KindKernel {
		if err := harness.CheckDevice(bravo, hosts); err != nil {
			t.Fatalf("bravo's kernel device after its agent stopped: %v", err)
		}
	} else if _, err := bravo.DeviceView(); err == nil {
		t.Fatal("bravo's device outlived its agent")
	}

	restarted := time.Now()
	a := m.startWith(bravo, withState(bravo))
	testkit.Eventually(t, convergeTimeout, "bravo's peers restored while NATS is down", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return harness.CheckDevice(bravo, hosts)
	})
	t.Logf("bravo's device had its peers back %s after its agent started, NATS down", time.Since(restarted).Round(time.Millisecond))
	m.pingAll(hosts)
	t.Logf("all pairs ping %s after bravo's agent started, NATS down", time.Since(restarted).Round(time.Millisecond))
	if m.nats.Running() {
		t.Fatal("NATS is running: the restore proved nothing")
	}
	if !strings.Contains(a.Logs(), "restored the mesh from the snapshot") {
		t.Errorf("bravo's agent does not say it restored its mesh:\n%s", a.LogTail(20))
	}

	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	hosts = m.joinWith(hosts, "delta", withState)
	testkit.EventuallyContext(t, convergeTimeout, "bravo's status after NATS returned", func(ctx context.Context) error {
		return checkStatus(ctx, bravo, len(hosts)-1)
	})
}

// An external wireguard-go left running by hand (an ikto 0.3.0 host) is
// adopted by an agent with wg_backend auto, meshes with the others, and
// keeps running with its peers when the agent stops.
func TestExternalDeviceAdoptedAndMeshed(t *testing.T) {
	t.Parallel()
	requireTool(t, "wireguard-go", "wireguard-go")
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie")
	charlie := hosts[2]
	wggo, err := charlie.StartExternalDevice(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.config(charlie)
	cfg.WGBackend = string(wgdev.KindAuto)
	for _, h := range hosts[:2] {
		m.start(h)
	}
	m.startWith(charlie, cfg)
	m.waitConverged(hosts)
	m.pingAll(hosts)
	testkit.EventuallyContext(t, convergeTimeout, "charlie's status", func(ctx context.Context) error {
		return checkStatusBackend(ctx, charlie, len(hosts)-1, wgdev.KindExternal)
	})

	a := m.agents[charlie.Name]
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, a); code != 0 {
		t.Fatalf("agent exited %d on SIGTERM\n%s", code, a.LogTail(20))
	}
	delete(m.agents, charlie.Name) // stopped on purpose
	if wggo.Exited() {
		t.Fatalf("the agent's stop took the external wireguard-go with it:\n%s", wggo.LogTail(10))
	}
	if err := harness.CheckDevice(charlie, hosts); err != nil {
		t.Errorf("the external device after its agent stopped: %v", err)
	}
	m.pingAll(hosts)
}

// A link under wg_dev_name that is not WireGuard (here a TUN device nobody
// serves a wireguard-go socket for) stops the agent with exit 1 and a
// message naming the link, its type and the fix; the link is left alone,
// and no record is written to the bucket.
func TestNonWireGuardLinkRefused(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	h := m.addHosts("alpha")[0]
	ctx := context.Background()
	if _, err := h.Exec(ctx, "ip", "tuntap", "add", "dev", h.DevName, "mode", "tun"); err != nil {
		t.Fatal(err)
	}
	a := m.start(h)
	if code := waitExit(t, a); code != 1 {
		t.Fatalf("agent exited %d, want 1\n%s", code, a.LogTail(20))
	}
	logs := a.Logs()
	for _, want := range []string{h.DevName, `"tuntap"`, "not WireGuard", "ip link del " + h.DevName} {
		if !strings.Contains(logs, want) {
			t.Errorf("exit message does not say %q:\n%s", want, a.LogTail(10))
		}
	}
	if out, err := h.Exec(ctx, "ip", "-o", "link", "show", "dev", h.DevName); err != nil || strings.Contains(out, ",UP") {
		t.Errorf("the refused link was touched: %q, %v", out, err)
	}
	// Refused before claiming: needs the agent to call backend.Check
	// before it writes its claim.
	if err := m.bucket.Absent(ctx, peer.Key(h.Prefix())); err != nil {
		t.Errorf("record of %s after the refusal: %v, want none written", h.Prefix(), err)
	}
}

// TestHostThatCannotHaveItsDeviceClaimsNothing starts agents on hosts that
// cannot make their WireGuard device — the UDP port held by another
// WireGuard device, no CAP_NET_ADMIN — next to a running mesh. Each exits
// at once with a message that names the cause and the fix, and nothing of
// it reaches the bucket: a host that cannot serve its prefix must not claim
// it.
func TestHostThatCannotHaveItsDeviceClaimsNothing(t *testing.T) {
	m := newMesh(t)
	hosts := m.addHosts("alpha", "porttaken", "nocap")
	alpha, portTaken, noCap := hosts[0], hosts[1], hosts[2]
	m.start(alpha)
	m.waitConverged(hosts[:1])

	// Another WireGuard device (wireguard-go) holds porttaken's UDP port.
	holder := portTaken.DevName + "p"
	p, err := portTaken.Start("port-holder", "wireguard-go", "-f", holder)
	if err != nil {
		t.Fatal(err)
	}
	// SIGTERM: wireguard-go removes its UAPI socket as it exits.
	t.Cleanup(func() { _ = p.Stop(2 * time.Second) })
	if err := testkit.Poll(context.Background(), convergeTimeout, func(ctx context.Context) error {
		_, err := portTaken.Exec(ctx, "wg", "set", holder, "listen-port", "51820")
		return err
	}); err != nil {
		t.Fatalf("hold UDP port 51820 on %s: %v", portTaken.Name, err)
	}
	a := m.start(portTaken)
	checkRefused(t, m, portTaken, a, "UDP port 51820 is in use", "wg_port")

	// No CAP_NET_ADMIN: root without the capability in its bounding set.
	bin, err := m.bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, err := noCap.WriteConfig(m.config(noCap))
	if err != nil {
		t.Fatal(err)
	}
	proc, err := noCap.Start("agent-without-net-admin", "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
		bin, "-c", cfgPath, "-s", noCap.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	checkRefused(t, m, noCap, &harness.Agent{Process: proc, Host: noCap}, "CAP_NET_ADMIN", "run ikto-agent as root")

	if code, exited := m.agents[alpha.Name].ExitCode(); exited {
		t.Errorf("alpha's agent exited %d", code)
	}
}

// checkRefused waits for a's agent to exit non-zero with a message holding
// every one of want, and checks that h's prefix has no record.
func checkRefused(t *testing.T, m *mesh, h *harness.Host, a *harness.Agent, want ...string) {
	t.Helper()
	if code := waitExit(t, a); code == 0 {
		t.Errorf("agent on %s exited 0, want an error\n%s", h.Name, a.LogTail(10))
	}
	logs := a.Logs()
	for _, w := range want {
		if !strings.Contains(logs, w) {
			t.Errorf("agent on %s: the exit message does not say %q:\n%s", h.Name, w, a.LogTail(10))
		}
	}
	if strings.Contains(logs, `msg="claimed prefix"`) {
		t.Errorf("agent on %s claimed its prefix before refusing:\n%s", h.Name, a.LogTail(10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	if err := m.bucket.Absent(ctx, peer.Key(h.Prefix())); err != nil {
		t.Errorf("agent on %s wrote to the bucket: %v", h.Name, err)
	}
	t.Logf("%s refused: %s", h.Name, a.LogTail(1))
}
