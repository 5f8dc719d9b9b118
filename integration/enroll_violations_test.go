package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// The knobs of TestEnrolledMeshIsNeverRefused.
const (
	// envViolationsDuration is how long it churns the mesh per server
	// kind: a Go duration, 10m for a long run.
	envViolationsDuration = "IKTO_VIOLATIONS_DURATION"
	// envViolationsTrace names a file to which it appends every subject
	// enrolled hosts sent, per server kind: the traces that
	// pkg/enroll/permissions_test.go holds.
	envViolationsTrace = "IKTO_VIOLATIONS_TRACE"
)

// violationsDefault is make test's churn per server kind: a few rounds
// (round) of about ten seconds each.
const violationsDefault = 45 * time.Second

// stopGrace is how long a stopped agent may take to exit on SIGTERM.
const stopGrace = 5 * time.Second

// serverViolation matches a refusal in the server's log: a path that
// happens to contain "Violation" is not one.
var serverViolation = regexp.MustCompile(`(Publish|Subscription) Violation`)

// permissionViolation matches a refusal as an agent logs it (nats.go's
// error, or bucket.ErrPermission from Conn.Explain) and as ikto-admin
// prints it.
var permissionViolation = regexp.MustCompile(`(?i)permissions? violation|denied by the NATS server's permissions`)

// TestEnrolledMeshIsNeverRefused runs a mesh of enrolled hosts through
// what a mesh lives through — hosts joining and leaving, agents restarting,
// the NATS server restarting, a copy of a host's key on another's claim,
// a heartbeat bucket as big as a large fleet's — and runs ikto-admin's
// read-only commands with a host's config, on both server kinds. The server must refuse
// nothing and no agent may log a refusal: the enrolled permissions hold
// all that the agent and those commands need. The one refusal the test
// makes on purpose — prune, run with a host's config, may not evict — is
// counted apart, and shows that both matchers see a refusal when there is
// one.
func TestEnrolledMeshIsNeverRefused(t *testing.T) {
	t.Parallel()
	d := violationsDuration(t)
	forEachServer(t, func(t *testing.T, server string) { testEnrolledMeshIsNeverRefused(t, server, d) })
}

func violationsDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(envViolationsDuration)
	if v == "" {
		return violationsDefault
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 10m", envViolationsDuration, v)
	}
	return d
}

// churn is the enrolled mesh under test: two anchors live through the
// whole run while other hosts join and leave.
type churn struct {
	t *testing.T
	w *enrollWorld
	// js is the operator's one connection, which outlives server restarts.
	js      jetstream.JetStream
	configs map[string]config.Config
	// started is every agent ever started, for the check of their logs.
	started []*harness.Agent
	live    []*harness.Host
	// restart stops the NATS server and starts it again.
	restart func(stopped func())
	// deliberate are the server's log lines of the refusal the test asked
	// for.
	deliberate map[string]bool
}

func testEnrolledMeshIsNeverRefused(t *testing.T, kind string, d time.Duration) {
	w := newEnrollWorld(t, kind)
	c := &churn{t: t, w: w, js: w.adminJetStream(), configs: map[string]config.Config{}, deliberate: map[string]bool{}}
	c.restart = c.natsRestarter()
	if path := os.Getenv(envViolationsTrace); path != "" {
		tr := traceSubjects(t, w)
		defer tr.write(t, path, kind)
	}
	w.initBuckets("created")
	c.writeFleetHeartbeats()
	for _, h := range w.m.addHosts("alpha", "bravo", "charlie") {
		c.join(h)
	}
	w.m.waitConverged(c.live)

	begin := time.Now()
	rounds := 0
	for rounds == 0 || time.Since(begin) < d {
		rounds++
		c.round(rounds)
	}
	t.Logf("%d rounds of join, copy, agent restart, NATS restart and leave in %s", rounds, time.Since(begin).Round(time.Second))

	c.checkAdminReads()
	c.checkPruneRefused()
	c.checkNoViolations()
}

// fleetHeartbeats is how many heartbeats of hosts long gone the heartbeat
// bucket holds, about 1 KiB each: more than the 1 MiB after which the
// server asks a consumer for flow control, so that every scan of the
// heartbeats (list, health, a host's look at a live holder) answers it, as
// it does in a fleet of a few thousand hosts.
const fleetHeartbeats = 1500

// writeFleetHeartbeats fills the heartbeat bucket, as the operator, with
// fleetHeartbeats heartbeats a day old of prefixes nobody claims.
func (c *churn) writeFleetHeartbeats() {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	live, err := c.js.KeyValue(ctx, bucket.LiveBucket(bucketName))
	if err != nil {
		t.Fatal(err)
	}
	gone := strings.Repeat("A", 43) + "="
	hb := bucket.Heartbeat{PublicKey: gone, At: time.Now().Add(-23 * time.Hour), Unreachable: slices.Repeat([]string{gone}, 20)}
	for i := range fleetHeartbeats {
		hb.Name = fmt.Sprintf("gone-%d", i)
		p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0xba, 0x11, 0xa5, 6: byte(i >> 8), 7: byte(i)}), 64)
		if err := bucket.PutHeartbeat(ctx, live, p, hb); err != nil {
			t.Fatal(err)
		}
	}
}

// round is one host joining, a copy of one anchor's key written over the
// other's claim, an anchor restarting, the NATS server restarting, and the
// oldest other host leaving.
func (c *churn) round(n int) {
	c.t.Helper()
	c.join(c.w.m.addHosts(fmt.Sprintf("join%d", n))[0])
	c.w.m.waitConverged(c.live)

	c.copyOverClaim(c.live[0], c.live[1])

	anchor := c.live[n%2]
	if err := c.w.m.agents[anchor.Name].Stop(stopGrace); err != nil {
		c.t.Fatal(err)
	}
	c.startAgent(anchor)
	c.w.m.waitConverged(c.live)

	c.restartNATS()

	c.evict(c.live[2])
}

// copyOverClaim writes, with an open host's credentials, a copy of owner's
// key over holder's claim, as a host of a mesh that still has shared
// credentials might: holder restores its record, and owner, reading that
// holder is live from the heartbeat bucket, leaves it to holder (were
// holder not live, owner would have to release the copy, which an enrolled
// host may not). It waits until holder's record is back.
func (c *churn) copyOverClaim(owner, holder *harness.Host) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	copied := recordCopiedTo(ctx, t, kv, owner, holder)
	copied.Name = "copy-of-" + owner.Name
	if _, err := kv.Put(ctx, peer.Key(holder.Prefix()), copied.Encode()); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyContext(t, convergeTimeout, holder.Name+" to restore its record over the copy", func(ctx context.Context) error {
		e, err := kv.Get(ctx, peer.Key(holder.Prefix()))
		if err != nil {
			return err
		}
		var r peer.Record
		if json.Unmarshal(e.Value(), &r) != nil || r.PublicKey != holder.PublicKey.String() {
			return fmt.Errorf("%s holds %s", peer.Key(holder.Prefix()), e.Value())
		}
		return nil
	})
	c.w.m.waitConverged(c.live)
}

// join enrolls h and starts its agent.
func (c *churn) join(h *harness.Host) {
	c.t.Helper()
	c.configs[h.Name] = c.w.enrollHost(h)
	c.startAgent(h)
	c.live = append(c.live, h)
}

func (c *churn) startAgent(h *harness.Host) {
	c.t.Helper()
	c.started = append(c.started, c.w.m.startWith(h, c.configs[h.Name]))
}

// evict has the operator evict h: its agent exits 4 and the others drop it.
func (c *churn) evict(h *harness.Host) {
	c.t.Helper()
	if code, stdout, stderr := c.w.admin("evict", h.PrivateAddress.String()); code != 0 {
		c.t.Fatalf("evict %s exited %d:\n%s%s", h.Name, code, stdout, stderr)
	}
	if a := c.w.m.agents[h.Name]; waitExit(c.t, a) != 4 {
		c.t.Errorf("evicted agent on %s exited %d, want 4\n%s", h.Name, waitExit(c.t, a), a.LogTail(20))
	}
	c.drop(h)
}

func (c *churn) drop(h *harness.Host) {
	c.live = slices.DeleteFunc(c.live, func(x *harness.Host) bool { return x == h })
	c.w.m.waitConverged(c.live)
}

// restartNATS stops the server until every agent has noticed, starts it
// again, and waits for every agent to write a heartbeat after it is back.
func (c *churn) restartNATS() {
	c.t.Helper()
	const lost = "lost NATS connection"
	before := map[string]int{}
	for _, h := range c.live {
		before[h.Name] = strings.Count(c.w.m.agents[h.Name].Logs(), lost)
	}
	c.restart(func() {
		testkit.Eventually(c.t, convergeTimeout, "every agent to notice the NATS server is down", func() error {
			for _, h := range c.live {
				if strings.Count(c.w.m.agents[h.Name].Logs(), lost) == before[h.Name] {
					return fmt.Errorf("%s has not", h.Name)
				}
			}
			return nil
		})
	})
	back := time.Now()
	testkit.EventuallyContext(c.t, convergeTimeout, "a heartbeat from every agent after the restart", func(ctx context.Context) error {
		if err := c.w.m.exitedEarly(c.live); err != nil {
			return err
		}
		hbs, err := c.heartbeats(ctx)
		if err != nil {
			return err // the operator's connection may still be reconnecting
		}
		for _, h := range c.live {
			if hb, ok := hbs[h.Prefix()]; !ok || !hb.At.After(back) {
				return fmt.Errorf("none from %s since %s", h.Name, back.Format(time.TimeOnly))
			}
		}
		return nil
	})
	c.w.m.waitConverged(c.live)
}

// natsRestarter returns how to restart the world's server: the embedded
// one restarts on its port and store; Debian's is killed by PID and run
// again with its configuration file (NATSProcess.Restart), which keeps its
// port, store, resolver directory and log.
func (c *churn) natsRestarter() func(stopped func()) {
	switch s := c.w.srv.(type) {
	case *harness.ConfNATS:
		return func(stopped func()) {
			s.Shutdown()
			stopped()
			if err := s.Start(); err != nil {
				c.t.Fatal(err)
			}
		}
	case *harness.NATSProcess:
		return func(stopped func()) {
			if err := s.Restart(stopped); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	c.t.Fatalf("cannot restart a %T", c.w.srv)
	return nil
}

// heartbeats reads the heartbeat bucket as the operator.
func (c *churn) heartbeats(ctx context.Context) (map[netip.Prefix]bucket.Heartbeat, error) {
	live, err := c.js.KeyValue(ctx, bucket.LiveBucket(bucketName))
	if err != nil {
		return nil, err
	}
	return bucket.Heartbeats(ctx, live)
}

// checkAdminReads runs ikto-admin's read-only commands with an anchor's
// config: they must succeed (health: exit 0 once the fleet is well).
func (c *churn) checkAdminReads() {
	t := c.t
	t.Helper()
	anchor := c.live[0]
	cfg := c.w.m.agents[anchor.Name].ConfigPath
	testkit.Eventually(t, convergeTimeout, "list with "+anchor.Name+"'s config to show every host online", func() error {
		rows, err := tryListRows(t, c.w.m.bins, cfg)
		if err != nil {
			return err
		}
		for _, h := range c.live {
			if r, ok := rows[h.Name]; !ok || r.State != "valid" || !r.Online {
				return fmt.Errorf("%s: %+v", h.Name, r)
			}
		}
		return nil
	})
	if code, stdout, stderr := runAdmin(t, c.w.m.bins, "-c", cfg, "list"); code != 0 {
		t.Errorf("list with %s's config exited %d:\n%s%s", anchor.Name, code, stdout, stderr)
	}
	if code, stdout, stderr := runAdmin(t, c.w.m.bins, "-c", cfg, "status", "-s", anchor.SocketPath); code != 0 {
		t.Errorf("status -s %s exited %d:\n%s%s", anchor.SocketPath, code, stdout, stderr)
	}
	testkit.Eventually(t, healthWindow, "health with "+anchor.Name+"'s config to say all is well", func() error {
		code, stdout, stderr := runAdmin(t, c.w.m.bins, "-c", cfg, "-o", "json", "health")
		var h fleetHealth
		if err := json.Unmarshal([]byte(stdout), &h); err != nil {
			return testkit.Permanent(fmt.Errorf("health -o json exited %d: %w\n%s%s", code, err, stdout, stderr))
		}
		if code != 0 || !h.OK {
			return fmt.Errorf("exit %d: %s", code, stdout) // exit 1: not all well yet
		}
		return nil
	})
}

// checkPruneRefused stops a host's agent, leaving its record, and makes its
// heartbeat two hours old as the operator: prune with an anchor's config
// reads all it needs, and may not evict. It must fail naming the subject
// it lacks and the operator's credentials, refused by the server in one or
// more log lines that are the test's own doing. The operator then evicts
// the host.
func (c *churn) checkPruneRefused() {
	t := c.t
	t.Helper()
	gone := c.live[len(c.live)-1]
	if err := c.w.m.agents[gone.Name].Stop(stopGrace); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	live, err := c.js.KeyValue(ctx, bucket.LiveBucket(bucketName))
	if err != nil {
		t.Fatal(err)
	}
	old := bucket.Heartbeat{PublicKey: gone.PublicKey.String(), Name: gone.Name, At: time.Now().Add(-2 * time.Hour)}
	if err := bucket.PutHeartbeat(ctx, live, gone.Prefix(), old); err != nil {
		t.Fatal(err)
	}
	cfg := c.w.m.agents[c.live[0].Name].ConfigPath
	code, stdout, stderr := runAdmin(t, c.w.m.bins, "-c", cfg, "prune", "--offline-for", "1h", "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would evict "+gone.Name) {
		t.Errorf("prune --dry-run with a host's config exited %d, want 0 and %s named:\n%s%s", code, gone.Name, stdout, stderr)
	}

	before := len(c.w.srv.Violations())
	code, stdout, stderr = runAdmin(t, c.w.m.bins, "-c", cfg, "prune", "--offline-for", "1h")
	t.Logf("prune with a host's config exited %d:\n%s%s", code, stdout, stderr)
	revoked := "$KV." + bucketName + ".revoked."
	if code == 0 || !strings.Contains(stderr, revoked) || !strings.Contains(stderr, "operator") {
		t.Errorf("prune with a host's config exited %d, want a failure naming %s… and the operator's credentials", code, revoked)
	}
	if !permissionViolation.MatchString(stderr) {
		t.Errorf("the log matcher does not see the refusal in %q", stderr)
	}
	testkit.Eventually(t, convergeTimeout, "the server to log the refusal of the prune", func() error {
		for _, v := range c.w.srv.Violations()[before:] {
			if strings.Contains(v, "ikto-admin") && strings.Contains(v, revoked) {
				c.deliberate[v] = true
			}
		}
		if len(c.deliberate) == 0 {
			return errors.New("no violation logged for " + revoked)
		}
		return nil
	})
	if !c.recordExists(ctx, gone) {
		t.Errorf("prune with a host's config removed %s's record", gone.Name)
	}
	if code, stdout, stderr := c.w.admin("evict", gone.PrivateAddress.String()); code != 0 {
		t.Fatalf("evict %s exited %d:\n%s%s", gone.Name, code, stdout, stderr)
	}
	c.drop(gone)
}

func (c *churn) recordExists(ctx context.Context, h *harness.Host) bool {
	c.t.Helper()
	kv, err := c.js.KeyValue(ctx, bucketName)
	if err != nil {
		c.t.Fatal(err)
	}
	ok, err := bucket.Claimed(ctx, kv, h.Prefix())
	if err != nil {
		c.t.Fatal(err)
	}
	return ok
}

// checkNoViolations: apart from the refusal the test asked for, the
// server logged none and no agent logged one.
func (c *churn) checkNoViolations() {
	t := c.t
	t.Helper()
	var all []string
	for _, v := range c.w.srv.Violations() {
		if serverViolation.MatchString(v) {
			all = append(all, v)
		}
	}
	for _, v := range all {
		if !c.deliberate[v] {
			t.Errorf("the server refused an enrolled client: %s", v)
		}
	}
	for _, a := range c.started {
		for _, l := range strings.Split(a.Logs(), "\n") {
			if permissionViolation.MatchString(l) {
				t.Errorf("%s (pid %d) logged a refusal: %s", a.Name, a.PID, l)
			}
		}
	}
	const leftToHolder = "a copy of this host's key sits on another live host's claim"
	left := 0
	for _, a := range c.started {
		left += strings.Count(a.Logs(), leftToHolder)
	}
	t.Logf("server violations: %d, %d of them the deliberate prune's; %d agent logs checked; a copy left to its live holder %d times",
		len(all), len(c.deliberate), len(c.started), left)
}
