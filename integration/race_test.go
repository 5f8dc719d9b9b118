package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// raceTimeout bounds the waits of the race tests: up to twenty userspace
// agents start at once on a machine that may be busy with other tests.
const raceTimeout = 3 * time.Minute

// newRaceMesh is newMesh with pinned neighbour entries, for many hosts.
func newRaceMesh(t *testing.T, count int) (*mesh, []*harness.Host) {
	t.Helper()
	bins := harnesstest.Binaries(t)
	n := harnesstest.NetworkWithOptions(t, harness.NetworkOptions{StaticNeighbours: true})
	m := &mesh{t: t, net: n, nats: harnesstest.NATS(t, n), bins: bins, agents: map[string]*harness.Agent{}}
	m.bucket = harnesstest.Bucket(t, m.nats, bucketName)
	var names []string
	for i := range count {
		names = append(names, fmt.Sprintf("h%02d", i+1))
	}
	return m, m.addHosts(names...)
}

// startTogether starts one agent per host with its config, all released at
// the same moment from their own goroutines, and registers their cleanup:
// stop, and print the log if the test failed.
func startTogether(t *testing.T, m *mesh, hosts []*harness.Host, cfgs []config.Config) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		release = make(chan struct{})
		agents  = make([]*harness.Agent, len(hosts))
		errs    = make([]error, len(hosts))
	)
	for i, h := range hosts {
		wg.Go(func() {
			<-release
			agents[i], errs[i] = h.StartAgent(m.bins, cfgs[i], "--log-level", "debug")
		})
	}
	close(release)
	wg.Wait()
	for i, a := range agents {
		if a == nil {
			continue
		}
		m.agents[hosts[i].Name] = a
		t.Cleanup(func() {
			if err := a.Stop(5 * time.Second); err != nil {
				t.Errorf("stop %s: %v", a.Name, err)
			}
			if t.Failed() {
				t.Logf("---- %s (pid %d):\n%s", a.Name, a.PID, a.LogTail(25))
			}
		})
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start agent on %s: %v", hosts[i].Name, err)
		}
	}
}

// TestRaceTenAgentsOnePrefix starts ten agents with ten keys on one prefix
// at once: exactly one holds it and runs, the nine others exit 3 saying who
// holds it, before configuring any device.
func TestRaceTenAgentsOnePrefix(t *testing.T) {
	m, hosts := newRaceMesh(t, 10)
	contested := hosts[0].PrivateAddress
	cfgs := make([]config.Config, len(hosts))
	for i, h := range hosts {
		h.PrivateAddress = contested // the harness's view of what each host claims
		cfgs[i] = m.config(h)
	}
	startTogether(t, m, hosts, cfgs)

	winner := soleSurvivor(t, m, hosts)
	t.Logf("%s won %s", winner.Name, winner.Prefix())

	ctx := context.Background()
	records, err := m.bucket.Records(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := records[peer.Key(winner.Prefix())]
	if len(records) != 1 || !ok || rec.PublicKey != winner.PublicKey.String() || rec.Name != winner.Name {
		t.Fatalf("bucket holds %+v, want only %s's claim of %s", records, winner.Name, winner.Prefix())
	}
	for _, h := range hosts {
		if h == winner {
			continue
		}
		checkLoser(t, m.agents[h.Name], winner)
	}
	testkit.EventuallyContext(t, convergeTimeout, "the winner to report itself synced", func(ctx context.Context) error {
		if code, exited := m.agents[winner.Name].ExitCode(); exited {
			return testkit.Permanent(fmt.Errorf("the winner exited %d", code))
		}
		st, err := winner.Status(ctx)
		if err != nil {
			return err
		}
		if !st.Synced || st.Self.PublicKey != winner.PublicKey.String() || len(st.Peers) != 0 {
			return fmt.Errorf("status of %s: synced %v, self %+v, %d peers", winner.Name, st.Synced, st.Self, len(st.Peers))
		}
		return nil
	})
}

// soleSurvivor waits until all agents of hosts but one have exited and
// returns the host of the one still running.
func soleSurvivor(t *testing.T, m *mesh, hosts []*harness.Host) *harness.Host {
	t.Helper()
	testkit.Eventually(t, raceTimeout, "all agents but one to exit", func() error {
		exited := 0
		for _, h := range hosts {
			if m.agents[h.Name].Exited() {
				exited++
			}
		}
		if exited < len(hosts)-1 {
			return fmt.Errorf("%d of %d agents exited", exited, len(hosts))
		}
		return nil
	})
	var winner *harness.Host
	for _, h := range hosts {
		if !m.agents[h.Name].Exited() {
			if winner != nil {
				t.Fatalf("both %s and %s still run", winner.Name, h.Name)
			}
			winner = h
		}
	}
	if winner == nil {
		t.Fatal("every agent exited; one must hold the prefix")
	}
	return winner
}

// checkLoser asserts that a loser exited 3 with a message naming the prefix
// and its holder, and left no device, control socket or mesh address.
func checkLoser(t *testing.T, a *harness.Agent, winner *harness.Host) {
	t.Helper()
	h := a.Host
	code, _ := a.ExitCode()
	if code != 3 {
		t.Errorf("%s exited %d, want 3\n%s", h.Name, code, a.LogTail(10))
		return
	}
	logs := a.Logs()
	for _, want := range []string{"address in use", winner.Prefix().String(), fmt.Sprintf("%q", winner.Name)} {
		if !strings.Contains(logs, want) {
			t.Errorf("%s's exit message does not say %s:\n%s", h.Name, want, a.LogTail(5))
		}
	}
	// A loser must fail its claim, not win it and lose the prefix later:
	// by then it would have put peers on its device and disturbed the mesh.
	// Its device may have opened before the claim, the prefix looking free
	// (first contact, docs/contract.md §5): empty, and gone with the loser.
	for _, won := range []string{`msg="claimed prefix"`, `msg="peer added"`, `msg="peers configured"`} {
		if strings.Contains(logs, won) {
			t.Errorf("%s logged %s before exiting:\n%s", h.Name, won, a.LogTail(10))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	links, err := h.Exec(ctx, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Exec(ctx, "ip", "-o", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(links, h.DevName) || strings.Contains(addrs, winner.PrivateAddress.String()) {
		t.Errorf("%s left its device or address behind:\n%s%s", h.Name, links, addrs)
	}
	if _, err := os.Stat("/var/run/wireguard/" + h.DevName + ".sock"); err == nil {
		t.Errorf("%s left its control socket /var/run/wireguard/%s.sock", h.Name, h.DevName)
	}
}

// TestRaceTwentyAgentsDistinctPrefixes starts twenty agents on twenty
// prefixes at once: they all claim, and every device lists the nineteen
// others; traffic flows around the ring of hosts.
func TestRaceTwentyAgentsDistinctPrefixes(t *testing.T) {
	m, hosts := newRaceMesh(t, 20)
	cfgs := make([]config.Config, len(hosts))
	for i, h := range hosts {
		cfgs[i] = m.config(h)
	}
	startTogether(t, m, hosts, cfgs)
	testkit.Eventually(t, raceTimeout, "twenty agents to form a full mesh", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return harness.CheckMesh(hosts)
	})
	for i, from := range hosts {
		to := hosts[(i+1)%len(hosts)]
		testkit.EventuallyContext(t, pingTimeout, from.Name+" to ping "+to.Name, func(ctx context.Context) error {
			_, err := from.Ping(ctx, to.PrivateAddress)
			return err
		})
	}
	records, err := m.bucket.Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[netip.Prefix]bool{}
	for _, r := range records {
		claimed[netip.MustParsePrefix(r.AllowedIP)] = true
	}
	for _, h := range hosts {
		if !claimed[h.Prefix()] {
			t.Errorf("%s's prefix %s is not in the bucket", h.Name, h.Prefix())
		}
	}
}
