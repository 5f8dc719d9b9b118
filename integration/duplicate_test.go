package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// twinWindow bounds how long two agents with one key take to see each
// other: each finds the other's heartbeat between two of its own (every
// 10 s), and a twin is believed gone 30 s after its last one.
const twinWindow = 60 * time.Second

// twinSaid is what an agent logs when another runs with its key.
const twinSaid = "another ikto-agent is running with this host's key and prefix"

// twinHealth is what ikto-admin health -o json says of keys run twice.
type twinHealth struct {
	OK        bool `json:"ok"`
	Duplicate []struct {
		Name   string `json:"name"`
		Writer struct {
			Instance string `json:"instance"`
			Addr     string `json:"addr"`
		} `json:"writer"`
		Other struct {
			Instance string `json:"instance"`
			Addr     string `json:"addr"`
		} `json:"other"`
	} `json:"duplicate"`
}

// TestClonedHost runs alpha's config a second time on another machine (a
// cloned VM: the same key, prefix and advertise_address; only the device
// name differs, because wireguard-go's sockets are shared between the
// test's namespaces). Both agents must say so in their logs, naming the
// other's instance and address and the fix, count it, show it in
// /v1/status, and ikto-admin health, list and status must show it (health
// and status exiting non-zero) until the clone stops. The pings the other
// hosts lose meanwhile and the time to detection are logged, not asserted.
// On the embedded server and on Debian's nats-server 2.9.
func TestClonedHost(t *testing.T) {
	onEveryServer(t, clonedHost)
}

func clonedHost(t *testing.T, m *mesh) {
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	hosts := m.startAll("alpha", "bravo", "charlie")
	cfgPath := m.agents["alpha"].ConfigPath
	m.pingAll(hosts)
	alpha := hosts[0]
	t.Logf("alpha, whose config the clone runs, is %s", alpha.PrivateAddress)
	pingers := startLossPingers(t, hosts)
	pingersStopped := false
	defer func() {
		if !pingersStopped {
			stopAll(t, pingers)
		}
	}()

	clone := m.addHosts("clone")[0]
	cfg := m.config(alpha)
	cfg.WGDevName = clone.DevName
	started := time.Now()
	cloneAgent := m.startWith(clone, cfg)

	instances := map[string]string{}
	for _, h := range []*harness.Host{alpha, clone} {
		testkit.EventuallyContext(t, convergeTimeout, h.Name+"'s instance id in its status", func(ctx context.Context) error {
			st, err := h.Status(ctx)
			if err != nil {
				return err
			}
			id, _ := st.Raw["instance"].(string)
			if id == "" {
				return errors.New("no instance in /v1/status")
			}
			instances[h.Name] = id
			return nil
		})
	}
	if instances["alpha"] == instances["clone"] {
		t.Fatalf("alpha and its clone drew the same instance id %s", instances["alpha"])
	}
	other := map[string]*harness.Host{"alpha": clone, "clone": alpha}
	for _, h := range []*harness.Host{alpha, clone} {
		testkit.Eventually(t, twinWindow, h.Name+" to log the other agent with its key", func() error {
			if err := m.exitedEarly([]*harness.Host{h}); err != nil {
				return err
			}
			line := logLine(m.agents[h.Name].Logs(), twinSaid)
			if line == "" {
				return errors.New("not yet")
			}
			o := other[h.Name]
			for _, w := range []string{"other_instance=" + instances[o.Name], "other_addr=" + o.Addr.String(), "ikto-init", cfg.PrivateKeyPath} {
				if !strings.Contains(line, w) {
					return testkit.Permanent(fmt.Errorf("%s's line lacks %q:\n%s", h.Name, w, line))
				}
			}
			return nil
		})
		t.Logf("%s logged the other agent with its key %s after the clone started", h.Name, time.Since(started).Round(time.Millisecond))
	}

	ctx := context.Background()
	for _, h := range []*harness.Host{alpha, clone} {
		st, err := h.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := st.Raw["duplicate"].(map[string]any)
		if d["instance"] != instances[other[h.Name].Name] || d["addr"] != other[h.Name].Addr.String() || !strings.Contains(fmt.Sprint(d["fix"]), "ikto-init") {
			t.Errorf("%s's /v1/status duplicate = %v, want the other's instance %s at %s and the fix", h.Name, d, instances[other[h.Name].Name], other[h.Name].Addr)
		}
		if v := mustMetric(t, h, "ikto_duplicate_identity"); v != 1 {
			t.Errorf("%s: ikto_duplicate_identity = %v, want 1", h.Name, v)
		}
		if v := mustMetric(t, h, "ikto_duplicate_identities_total"); v < 1 {
			t.Errorf("%s: ikto_duplicate_identities_total = %v, want at least 1", h.Name, v)
		}
		code, stdout, stderr := runAdmin(t, bins, "status", "-s", h.SocketPath)
		if code == 0 || !strings.Contains(stdout, "duplicate") || !strings.Contains(stderr, "ikto-init") {
			t.Errorf("ikto-admin status on %s: exit %d; want non-zero, the duplicate and the fix:\n%s%s", h.Name, code, stdout, stderr)
		}
	}
	testkit.Eventually(t, twinWindow, "health to report alpha's key run twice", func() error {
		code, h, out := adminHealth(t, bins, cfgPath)
		if code == 0 || h.OK || len(h.Duplicate) != 1 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		d := h.Duplicate[0]
		pair := map[string]bool{d.Writer.Instance: true, d.Other.Instance: true}
		if d.Name != "alpha" || !pair[instances["alpha"]] || !pair[instances["clone"]] {
			return testkit.Permanent(fmt.Errorf("health names another duplicate than alpha's two instances %v: %s", instances, out))
		}
		return nil
	})
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "list")
	if code != 0 || !strings.Contains(logLine(stdout, "alpha"), "running twice") {
		t.Errorf("list: exit %d; want alpha's row marked running twice:\n%s%s", code, stdout, stderr)
	}
	lost, gap := stopAll(t, pingers)
	pingersStopped = true
	t.Logf("while the clone ran (%s): %d pings lost over all pairs, longest gap %s", time.Since(started).Round(time.Second), lost, gap.Round(time.Millisecond))

	// The clone goes: alpha says so, and health is all well again.
	if err := cloneAgent.Stop(agentStopTimeout); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	testkit.Eventually(t, twinWindow+offlineTimeout, "health to be all well once the clone stopped", func() error {
		if code, h, out := adminHealth(t, bins, cfgPath); code != 0 || !h.OK {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	t.Logf("health was all well %s after the clone stopped", time.Since(stopped).Round(time.Second))
	if !strings.Contains(m.agents["alpha"].Logs(), "has written no heartbeat for a while") {
		t.Errorf("alpha did not log the end of the other agent with its key:\n%s", m.agents["alpha"].LogTail(20))
	}
	if v := mustMetric(t, alpha, "ikto_duplicate_identity"); v != 0 {
		t.Errorf("alpha: ikto_duplicate_identity = %v after the clone stopped, want 0", v)
	}
	if n := strings.Count(m.agents["alpha"].Logs(), twinSaid); n != 1 {
		t.Errorf("alpha logged the other agent %d times, want once", n)
	}
}

// adminHealth runs ikto-admin health -o json with cfgPath.
func adminHealth(t *testing.T, bins *harness.Binaries, cfgPath string) (int, twinHealth, string) {
	t.Helper()
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "health", "-o", "json")
	var h twinHealth
	if err := json.Unmarshal([]byte(stdout), &h); err != nil {
		t.Fatalf("health -o json: %v\n%s%s", err, stdout, stderr)
	}
	return code, h, stdout
}

// logLine is the first line of logs that contains s, "" when none does.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestSecondAgentOnOneDevice starts a second agent with alpha's config in
// alpha's namespace, on another admin socket: it must not adopt the device
// alpha's agent drives, but exit 1 naming that agent (its pid and socket)
// and the fix, before it writes anything to either bucket; alpha's mesh
// goes on.
func TestSecondAgentOnOneDevice(t *testing.T) {
	t.Parallel()
	m, _, hosts, _ := startAdminMesh(t, "alpha", "bravo")
	alpha := hosts[0]
	first := m.agents["alpha"]
	ctx := context.Background()
	testkit.EventuallyContext(t, convergeTimeout, "alpha's first heartbeat", func(ctx context.Context) error {
		return heartbeatsWritten(ctx, hosts[:1])
	})
	before := bucketSeq(t, m)
	agentBin, err := m.bins.Path(harness.AgentBinary)
	if err != nil {
		t.Fatal(err)
	}
	socket := harnesstest.SharedDir(t, "ikto-second-") + "/second.sock"
	code, stderr := runBadAgent(t, alpha, agentBin, first.ConfigPath, socket, false)
	t.Logf("second agent: exit %d: %s", code, strings.TrimSpace(stderr))
	if code != 1 {
		t.Fatalf("second agent on alpha's device exited %d, want 1:\n%s", code, stderr)
	}
	for _, w := range []string{alpha.DevName, fmt.Sprintf("ikto-agent pid %d", first.PID), first.SocketPath, "wg_dev_name"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("the second agent's error lacks %q:\n%s", w, stderr)
		}
	}
	if after := bucketSeq(t, m); after != before {
		t.Errorf("the second agent wrote to the bucket: last sequence %d before, %d after", before, after)
	}
	// Nor to the heartbeat bucket: alpha would have found it there.
	if strings.Contains(first.Logs(), twinSaid) {
		t.Errorf("alpha found another agent's heartbeat with its key:\n%s", first.LogTail(20))
	}
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
	if err := harness.CheckMesh(hosts); err != nil {
		t.Fatalf("alpha's mesh after the second agent: %v", err)
	}
	if _, err := alpha.Ping(ctx, hosts[1].PrivateAddress); err != nil {
		t.Errorf("alpha after the second agent: %v", err)
	}
}

// bucketSeq is the last sequence of the mesh's bucket: what any write to
// it, even of an unchanged record, moves. (The heartbeat bucket moves with
// every agent's heartbeat; an agent writes there only once it has claimed.)
func bucketSeq(t *testing.T, m *mesh) uint64 {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(m.bucket.Conn)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_"+bucketName)
	if err != nil {
		t.Fatalf("stream of %s: %v", bucketName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream of %s: %v", bucketName, err)
	}
	return info.State.LastSeq
}
