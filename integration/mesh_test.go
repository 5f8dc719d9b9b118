package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

func TestThreeHostsFormAMesh(t *testing.T) {
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)

	// The socket is root's, and the ikto group's where it exists.
	mode := os.FileMode(0o600)
	if g, err := api.SocketGroup(api.DefaultGroup, true); err != nil {
		t.Fatal(err)
	} else if g != nil {
		mode = 0o660
	}
	for _, h := range hosts {
		testkit.EventuallyContext(t, convergeTimeout, "status of "+h.Name, func(ctx context.Context) error {
			return checkStatus(ctx, h, len(hosts)-1)
		})
		st, err := os.Stat(h.SocketPath)
		if err != nil {
			t.Errorf("admin socket: %v", err)
		} else if st.Mode().Perm() != mode {
			t.Errorf("admin socket %s has mode %04o, want %04o", h.SocketPath, st.Mode().Perm(), mode)
		}
	}
}

// checkStatus checks what the agent on h says about itself and its peers;
// its backend must be the run's (harness.TestBackend).
func checkStatus(ctx context.Context, h *harness.Host, peers int) error {
	return checkStatusBackend(ctx, h, peers, harness.TestBackend())
}

// checkStatusBackend is checkStatus for an agent whose backend is given
// (auto: any).
func checkStatusBackend(ctx context.Context, h *harness.Host, peers int, backend wgdev.Kind) error {
	st, err := h.Status(ctx)
	if err != nil {
		return err
	}
	var problems []string
	if st.Self.Name != h.Name || st.Self.AllowedIP != h.Prefix().String() ||
		st.Self.PublicKey != h.PublicKey.String() || st.Self.AdvertiseAddress != h.Addr.String() {
		problems = append(problems, fmt.Sprintf("self = %+v", st.Self))
	}
	if st.Backend != string(backend) && backend != wgdev.KindAuto {
		problems = append(problems, fmt.Sprintf("backend = %q, want %s", st.Backend, backend))
	}
	if st.Device != h.DevName {
		problems = append(problems, fmt.Sprintf("device = %q, want %q", st.Device, h.DevName))
	}
	if !st.Synced || !st.NATS.Connected {
		problems = append(problems, fmt.Sprintf("synced = %v, nats connected = %v", st.Synced, st.NATS.Connected))
	}
	if len(st.Peers) != peers {
		problems = append(problems, fmt.Sprintf("%d peers, want %d", len(st.Peers), peers))
	}
	for _, p := range st.Peers {
		if p.Name == "" || p.Endpoint == "" || len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != p.AllowedIP {
			problems = append(problems, fmt.Sprintf("peer %+v", p))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("status of %s: %s", h.Name, strings.Join(problems, "; "))
	}
	return nil
}

func TestFourthHostJoins(t *testing.T) {
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.join(hosts, "delta")
}

func TestDeletedRecordEvictsHost(t *testing.T) {
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo", "charlie")

	charlie := hosts[2]
	ctx := context.Background()
	if err := m.bucket.Delete(ctx, peer.Key(charlie.Prefix())); err != nil {
		t.Fatalf("delete record of charlie: %v", err)
	}
	if code := waitExit(t, m.agents[charlie.Name]); code != 4 {
		t.Errorf("evicted agent exited %d, want 4\n%s", code, m.agents[charlie.Name].LogTail(20))
	}
	m.waitConverged(hosts[:2])
	if err := m.bucket.Absent(ctx, peer.Key(charlie.Prefix())); err != nil {
		t.Errorf("charlie's record after eviction: %v, want it gone (the agent must not claim again)", err)
	}
}

func TestPrefixHeldByAnotherKey(t *testing.T) {
	m := newMesh(t)
	hosts := m.addHosts("alpha", "intruder")
	alpha, intruder := hosts[0], hosts[1]
	m.start(alpha)
	ctx := context.Background()
	testkit.EventuallyContext(t, convergeTimeout, "alpha's claim", func(ctx context.Context) error {
		_, err := m.bucket.Record(ctx, alpha.Prefix())
		return err
	})

	cfg := m.config(intruder)
	cfg.PrivateAddress = alpha.PrivateAddress.String()
	a := m.startWith(intruder, cfg)
	if code := waitExit(t, a); code != 3 {
		t.Fatalf("agent claiming a held prefix exited %d, want 3\n%s", code, a.LogTail(20))
	}
	logs := a.Logs()
	for _, want := range []string{alpha.Prefix().String(), "alpha"} {
		if !strings.Contains(logs, want) {
			t.Errorf("exit message does not name %q:\n%s", want, a.LogTail(10))
		}
	}
	rec, err := m.bucket.Record(ctx, alpha.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	if rec.PublicKey != alpha.PublicKey.String() || rec.Name != "alpha" {
		t.Errorf("record after the failed claim = %+v, want alpha's", rec)
	}
	if code, exited := m.agents["alpha"].ExitCode(); exited {
		t.Errorf("alpha's agent exited %d", code)
	}
}

func TestAgentStartsBeforeNATS(t *testing.T) {
	m := newMeshNATSDown(t)
	hosts := m.addHosts("alpha", "bravo")

	// Until NATS starts, a listener on its port counts the agents' attempts
	// and hangs up on them: proof that they keep retrying instead of exiting.
	var attempts atomic.Int64
	l, err := net.Listen("tcp", m.nats.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	for _, h := range hosts {
		m.start(h)
	}
	testkit.Eventually(t, exitTimeout, "agents to retry NATS", func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if n := attempts.Load(); n < 4 {
			return fmt.Errorf("%d connection attempts so far, want 4", n)
		}
		return nil
	})
	l.Close()
	<-accepted
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}

	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	m.bucket = harnesstest.Bucket(t, m.nats, bucketName)
	m.waitConverged(hosts)
	m.pingAll(hosts)
}

func TestSIGTERMKeepsTheClaim(t *testing.T) {
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo")
	alpha, bravo := hosts[0], hosts[1]
	for _, h := range hosts {
		m.start(h)
	}
	m.waitConverged(hosts)

	a := m.agents[bravo.Name]
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, a); code != 0 {
		t.Fatalf("agent exited %d on SIGTERM, want 0\n%s", code, a.LogTail(20))
	}
	rec, err := m.bucket.Record(context.Background(), bravo.Prefix())
	if err != nil {
		t.Fatalf("bravo's record after SIGTERM: %v", err)
	}
	if rec.PublicKey != bravo.PublicKey.String() {
		t.Errorf("bravo's record after SIGTERM holds key %s, want %s", rec.PublicKey, bravo.PublicKey)
	}
	// The others keep the stopped host: its claim stands.
	if err := harness.CheckDevice(alpha, hosts); err != nil {
		t.Error(err)
	}

	// Restarting with the same key takes the claim back and the mesh heals.
	m.start(bravo)
	m.waitConverged(hosts)
	m.pingAll(hosts)
}

func TestNATSOutageLeavesDevicesAlone(t *testing.T) {
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo")
	m.pingAll(hosts)

	m.nats.Shutdown()
	for _, h := range hosts {
		testkit.EventuallyContext(t, convergeTimeout, h.Name+" to notice NATS is down", func(ctx context.Context) error {
			st, err := h.Status(ctx)
			if err != nil {
				return err
			}
			if st.NATS.Connected {
				return errors.New("status still says connected")
			}
			return nil
		})
	}
	// Two resync periods without NATS must not touch the devices.
	deadline := time.Now().Add(5 * time.Second)
	testkit.Eventually(t, 10*time.Second, "the devices to stay as they were", func() error {
		for _, h := range hosts {
			if err := harness.CheckDevice(h, hosts); err != nil {
				t.Fatalf("while NATS is down: %v", err)
			}
		}
		if time.Now().Before(deadline) {
			return errors.New("still watching")
		}
		return nil
	})
	m.pingAll(hosts)

	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	// A host that joins after the outage proves the watch came back.
	m.join(hosts, "charlie")
}
