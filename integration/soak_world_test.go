package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// soak is one topology's run: the world, the soak's model of it, and what
// it injected. Only the test's goroutine changes it; the sampler reads the
// model, and agents' exits arrive on a channel.
type soak struct {
	t      *testing.T
	cfg    soakSettings
	topo   soakTopology
	rng    *rand.Rand
	net    *harness.Network
	nats   *soakNATS
	bins   *harness.Binaries
	bucket *harness.Bucket
	opCfg  string // the operator's config for ikto-admin
	start  time.Time
	model  *soakModel

	hosts    []*soakHost
	used     map[netip.Prefix]bool // every prefix a host or a hostile write used
	released []netip.Prefix        // prefixes hosts left (moved or evicted): free keys with a past
	// said is the last signed record the soak read of each host: replayed
	// once the host has superseded it.
	said  map[string][]byte
	joins int
	exits chan soakExit
	// stopped are the agents the soak killed or stopped itself: their
	// exits are no failure.
	stopped map[*harness.Agent]bool
	due     []soakDue
	hostile int // serial number of hostile records

	stats    soakStats
	timeline []string
	mu       sync.Mutex // guards timeline (the exit watchers note too)
}

// soakHostState is where a host is in its life.
type soakHostState int

const (
	soakRunning soakHostState = iota // its agent runs
	soakDown                         // the soak killed or stopped its agent; a restart is due
	soakEvicted                      // ikto-admin evicted it: its agent must exit 4
	soakFailed                       // its agent exited on its own: a soakViolation, not restarted
)

// soakHost is one host and the soak's record of it.
type soakHost struct {
	*harness.Host
	agent  *harness.Agent
	agents []*harness.Agent // every agent it ran, for the log audit
	state  soakHostState
	// steady hosts are never killed, evicted or re-addressed: the leak
	// check's subjects, and the pingers' ends during the chaos.
	steady bool
	// evictedAt is when it was evicted, and exitedAt when its agent then
	// exited 4.
	evictedAt, exitedAt time.Time
	evictedRunning      bool // its agent ran when it was evicted
	// revoked is set while its revoked.* record is in the bucket (a
	// deleted bucket takes it along).
	revoked bool
	// pending is set by a write on its key until the soak sees its own
	// record there again: killing it meanwhile would make its restart meet
	// a foreign value, which a starting agent refuses (exit 3) by design.
	pending bool
	writes  soakWriteChain
	// claimed is set once its current agent reported its claim held: until
	// then a write on its key meets the agent's start-up claim, which
	// refuses a foreign value (exit 3) by design.
	claimed  bool
	moved    []netip.Prefix // prefixes it left when re-addressed
	baseline *soakLeakSample
	dels     []time.Time // device deletions not yet seen healed
	delPeers int         // peers its device had when last deleted
}

func (st soakHostState) String() string {
	return [...]string{"running", "down", "evicted", "failed"}[st]
}

// soakLogTail is the last n lines of an agent's log without wireguard-go's
// own chatter, which would bury the agent's lines.
func soakLogTail(a *harness.Agent, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(a.Logs(), "\n"), "\n") {
		if !strings.Contains(l, "source=wireguard-go") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// soakExit is an agent process that ended.
type soakExit struct {
	host  *soakHost
	agent *harness.Agent
	code  int
	at    time.Time
}

// soakDue is a recovery the soak scheduled: an agent's restart, a
// server's.
type soakDue struct {
	at   time.Time
	what string
	run  func() error
}

// soakOpTimeout bounds one bucket operation of the soak: a write during an
// election must not stall the fault loop.
const soakOpTimeout = 2 * time.Second

// note adds a line to the timeline, stamped with the time since the start
// and the time of day.
func (s *soak) note(format string, args ...any) {
	now := time.Now()
	// The wall-clock time matches the agents' log lines.
	line := fmt.Sprintf("+%7.3fs %s %s", now.Sub(s.start).Seconds(), now.UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	s.mu.Lock()
	s.timeline = append(s.timeline, line)
	s.mu.Unlock()
}

// config is h's agent configuration for this topology.
func (s *soak) config(h *soakHost) config.Config {
	cfg := h.Config(s.nats.url, soakBucket)
	cfg.NATSKVReplicas = s.nats.replicas()
	return cfg
}

// startAgent starts h's agent with its current prefix and watches its exit.
func (s *soak) startAgent(h *soakHost) error {
	s.model.claim(h.Name, h.PublicKey, h.Prefix())
	a, err := h.StartAgent(s.bins, s.config(h), "--log-level", "debug")
	if err != nil {
		return err
	}
	h.agent, h.agents, h.claimed = a, append(h.agents, a), false
	if h.state == soakDown {
		h.state = soakRunning
	}
	s.stats.starts++
	s.model.target(h.Host, h.Prefix())
	go func() {
		<-a.Done()
		code, _ := a.ExitCode()
		select {
		case s.exits <- soakExit{host: h, agent: a, code: code, at: time.Now()}:
		default: // the soak is over: nobody reads any more
		}
	}()
	return nil
}

// stopAgent ends h's agent — SIGKILL, or SIGTERM with kill false — and
// marks the exit as the soak's doing.
func (s *soak) stopAgent(h *soakHost, kill bool) error {
	a := h.agent
	s.stopped[a] = true
	s.model.untarget(h.Host)
	h.state = soakDown
	if kill {
		if err := a.Signal(syscall.SIGKILL); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := a.Wait(ctx)
		return err
	}
	return a.Stop(5 * time.Second)
}

// drainExits judges every agent exit so far (invariant 3): the soak's own
// kills and stops, and exit 4 of an evicted host, are expected; anything
// else is a soakViolation, and the host is left out of the mesh from then on.
func (s *soak) drainExits() {
	for {
		select {
		case e := <-s.exits:
			s.judgeExit(e)
		default:
			return
		}
	}
}

func (s *soak) judgeExit(e soakExit) {
	if s.stopped[e.agent] {
		delete(s.stopped, e.agent)
		return
	}
	h := e.host
	if h.state == soakEvicted && e.code == 4 {
		h.exitedAt = e.at
		s.note("%s's agent (pid %d) exited 4 after its eviction", h.Name, e.agent.PID)
		s.model.untarget(h.Host)
		return
	}
	s.note("UNEXPECTED: %s's agent (pid %d) exited %d", h.Name, e.agent.PID, e.code)
	s.model.violate("agent on %s (pid %d, state %v) exited %d; log tail:\n%s", h.Name, e.agent.PID, h.state, e.code,
		soakIndent(soakLogTail(e.agent, 25), "    "))
	s.model.untarget(h.Host)
	h.state = soakFailed
}

// runDue runs every scheduled recovery whose time has come (all of them
// with all set).
func (s *soak) runDue(all bool) {
	now := time.Now()
	var later []soakDue
	for _, d := range s.due {
		if !all && d.at.After(now) {
			later = append(later, d)
			continue
		}
		if err := d.run(); err != nil {
			s.note("%s failed: %v", d.what, err)
			s.model.violate("%s: %v", d.what, err)
		}
	}
	s.due = later
}

func (s *soak) schedule(after time.Duration, what string, run func() error) {
	s.due = append(s.due, soakDue{at: time.Now().Add(after), what: what, run: run})
}

// between is a uniformly random duration in [lo, hi).
func (s *soak) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// holdsOwn reports whether h's key holds h's own record; known is false
// when the bucket did not answer.
func (s *soak) holdsOwn(h *soakHost) (own, known bool) {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	e, err := s.bucket.Get(ctx, peer.Key(h.Prefix()))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, true
	}
	if err != nil {
		return false, false
	}
	var r peer.Record
	own = json.Unmarshal(e.Value(), &r) == nil && r.PublicKey == h.PublicKey.String()
	if own {
		h.pending = false
	}
	return own, true
}

// hasClaimed reports whether h's running agent got past its start-up claim.
func (s *soak) hasClaimed(h *soakHost) bool {
	if h.state != soakRunning {
		return false
	}
	if h.claimed {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	st, err := h.Status(ctx)
	h.claimed = err == nil && st.Synced && st.Claim == "held"
	return h.claimed
}

// settled reports whether h may be killed, stopped or evicted now without
// meeting a write of the soak's that its agent has not undone yet.
func (s *soak) settled(h *soakHost) bool {
	if own, known := s.holdsOwn(h); known {
		return own
	}
	return !h.pending
}

// writeOperatorConfig is the config ikto-admin runs with: a host's settings
// for this topology (server, bucket, mesh); the key file need not exist.
func (s *soak) writeOperatorConfig(h *soakHost) {
	cfg := s.config(h)
	cfg.Name, cfg.PrivateKeyPath = "operator", filepath.Join(s.t.TempDir(), "no.key")
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		s.t.Fatal(err)
	}
	s.opCfg = harnesstest.WriteFile(s.t, filepath.Join(s.t.TempDir(), "operator.json"), b, 0o600)
}

// openBucket opens the soak's handle on the agents' bucket once an agent has
// made it (R3 on the cluster: the soak must not create it with defaults).
func (s *soak) openBucket() {
	testkit.EventuallyContext(s.t, soakConvergeTimeout, "the agents' bucket", func(ctx context.Context) error {
		// One attempt must not take the whole wait: a JetStream request
		// sent during the cluster's first election may go unanswered.
		ctx, cancel := context.WithTimeout(ctx, soakOpTimeout)
		defer cancel()
		b, err := harness.OpenExistingBucket(ctx, s.nats.url, soakBucket)
		if err != nil {
			return err
		}
		s.bucket = b
		return nil
	})
	s.t.Cleanup(func() { _ = s.bucket.Close() })
}

// live are the hosts whose agents run and are meant to be in the mesh.
func (s *soak) live() []*soakHost {
	var out []*soakHost
	for _, h := range s.hosts {
		if h.state == soakRunning {
			out = append(out, h)
		}
	}
	return out
}

// members are the hosts that are or will be in the mesh: running, or down
// with a restart due.
func (s *soak) members() []*soakHost {
	var out []*soakHost
	for _, h := range s.hosts {
		if h.state == soakRunning || h.state == soakDown {
			out = append(out, h)
		}
	}
	return out
}

func soakHarnessHosts(hs []*soakHost) []*harness.Host {
	out := make([]*harness.Host, len(hs))
	for i, h := range hs {
		out[i] = h.Host
	}
	return out
}
