package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// The scenarios of issue 11: loss of state is healed, never obeyed. Each
// runs on every server of the matrix (onEveryServer), on a network and NATS
// of its own, so the scenarios run in parallel.

// TestBucketDeletedUnderARunningMesh deletes the whole bucket (an operator's
// `nats kv del`, a wiped server) under three meshed hosts pinging each other
// 20 times a second. No agent exits, no packet is lost, the agents make the
// bucket again and write their records back, and a host joining afterwards
// reaches everyone.
func TestBucketDeletedUnderARunningMesh(t *testing.T) {
	onEveryServer(t, bucketDeletedUnderARunningMesh)
}

func bucketDeletedUnderARunningMesh(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	pingers := startLossPingers(t, hosts)

	ctx := context.Background()
	// An evicted host's key: every agent has seen its revocation.
	evicted := newPublicKey(t)
	if err := bucket.Revoke(ctx, m.bucket, evicted, peer.Record{Name: "evicted"}, time.Now(), bucket.Operator{}); err != nil {
		t.Fatal(err)
	}
	comeback := func() {
		t.Helper()
		at := netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked()
		r := peer.Record{Name: "evicted", PublicKey: evicted.String(), AdvertiseAddress: unusedUnderlay(m).String(), AllowedIP: at.String(), WGPort: 51820}
		if _, err := m.bucket.Put(ctx, peer.Key(at), r.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	comeback()
	for _, h := range hosts {
		testkit.EventuallyContext(t, convergeTimeout, h.Name+" to refuse the evicted key", func(ctx context.Context) error {
			v, err := metricValue(ctx, h.SocketPath, rejectionsTotal(peer.ReasonRevoked))
			if err == nil && v < 1 {
				err = fmt.Errorf("%s = %v", rejectionsTotal(peer.ReasonRevoked), v)
			}
			return err
		})
	}
	deleted, writable := deleteBucketAndWait(t, m.bucket)
	testkit.EventuallyContext(t, convergeTimeout, "every live host's record back", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return recordsOf(ctx, m, hosts)
	})
	back := time.Since(deleted)
	t.Logf("bucket deleted: writable again after %s, every record back after %s (%s after writable)",
		writable.Round(time.Millisecond), back.Round(time.Millisecond), (back - writable).Round(time.Millisecond))
	if back-writable > 2*time.Second {
		t.Errorf("records came back %s after the bucket was writable, want within 2s", back-writable)
	}
	// The revocation was lost with the bucket; the agents write it back,
	// and the evicted key stays out.
	testkit.EventuallyContext(t, convergeTimeout, "the lost revocation back in the bucket", func(ctx context.Context) error {
		_, err := m.bucket.Get(ctx, peer.RevokedKey(evicted))
		return err
	})
	t.Logf("the revocation lost with the bucket was written back after %s", time.Since(deleted).Round(time.Millisecond))
	comeback()
	m.waitConverged(hosts)
	holdSteady(t, m, hosts, 2*time.Second)

	all := m.join(hosts, "delta")
	if lost, _ := stopAll(t, pingers); lost != 0 {
		t.Errorf("%d pings lost across the bucket's deletion, want 0", lost)
	}
	if err := m.exitedEarly(all); err != nil {
		t.Fatal(err)
	}
}

// recordReadTimeout bounds the test's read of one record. Right after a
// bucket is made again, nats-server 2.9 can leave a read unanswered (a
// direct get's answer is core NATS; the agents read again, contract §6); a
// test polling for the records asks again too, instead of waiting out its
// whole attempt (10 s) and reporting the wait as the agents'.
const recordReadTimeout = time.Second

// recordsOf is nil when every host's own record is in the bucket.
func recordsOf(ctx context.Context, m *mesh, hosts []*harness.Host) error {
	for _, h := range hosts {
		rctx, cancel := context.WithTimeout(ctx, recordReadTimeout)
		rec, err := m.bucket.Record(rctx, h.Prefix())
		cancel()
		if err != nil {
			return err
		}
		if rec.PublicKey != h.PublicKey.String() {
			return fmt.Errorf("%s's prefix holds %s's key %s", h.Name, rec.Name, rec.PublicKey)
		}
	}
	return nil
}

// TestClaimOverwrittenIsRestored overwrites alpha's record for a second —
// first with garbage, then with another key's record — and puts it back, as
// a careless script or a confused host might. alpha's agent restores its
// record itself at once and never exits; the garbage costs no packet, since
// the other agents keep alpha's peer while its record is not a record.
func TestClaimOverwrittenIsRestored(t *testing.T) {
	onEveryServer(t, claimOverwrittenIsRestored)
}

func claimOverwrittenIsRestored(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	alpha := hosts[0]
	ctx := context.Background()
	key := peer.Key(alpha.Prefix())
	own, err := m.bucket.Record(ctx, alpha.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		value    []byte
		wantLoss bool
	}{
		{"garbage", []byte("not a record"), false},
		{"another key's record", intruderRecord(t, m, alpha).Encode(), true},
		// bravo releases the copy of its key and alpha defends its claim,
		// both with compare-and-set on the copy's revision: whichever wins,
		// the delete marker that may follow is no eviction of alpha.
		{"a copy of bravo's record", copyRecord(t, m, hosts[1], alpha).Encode(), false},
	} {
		pingers := startLossPingers(t, hosts)
		at := time.Now()
		if _, err := m.bucket.Put(ctx, key, tc.value); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyContext(t, convergeTimeout, "alpha to restore its record over "+tc.name, func(ctx context.Context) error {
			return recordsOf(ctx, m, hosts[:1])
		})
		restored := time.Since(at)
		// A second after the overwrite, whoever wrote it puts alpha's back.
		testkit.EventuallyContext(t, 5*time.Second, "a second to pass", func(context.Context) error {
			if time.Since(at) < time.Second {
				return errors.New("not yet")
			}
			return nil
		})
		if _, err := m.bucket.Put(ctx, key, own.Encode()); err != nil {
			t.Fatal(err)
		}
		m.waitConverged(hosts)
		holdSteady(t, m, hosts, 2*time.Second)
		lost, _ := stopAll(t, pingers)
		t.Logf("%s over alpha's record: restored by its agent after %s; %d pings lost in all", tc.name, restored.Round(time.Millisecond), lost)
		if lost != 0 && !tc.wantLoss {
			t.Errorf("%d pings lost while alpha's record was %s, want 0", lost, tc.name)
		}
		if err := m.exitedEarly(hosts); err != nil {
			t.Fatal(err)
		}
	}
	if v := mustMetric(t, alpha, `ikto_claim_repairs_total{action="defend"}`); v < 2 {
		t.Errorf("alpha counted %v defends, want at least 2", v)
	}
}

// copyRecord is host from's record moved to h's prefix.
func copyRecord(t *testing.T, m *mesh, from, h *harness.Host) peer.Record {
	t.Helper()
	r, err := m.bucket.Record(context.Background(), from.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	r.AllowedIP = h.Prefix().String()
	return r
}

// intruderRecord is a record for a fresh key at h's prefix.
func intruderRecord(t *testing.T, m *mesh, h *harness.Host) peer.Record {
	t.Helper()
	return peer.Record{Name: "intruder", PublicKey: newPublicKey(t).String(),
		AdvertiseAddress: unusedUnderlay(m).String(), AllowedIP: h.Prefix().String(), WGPort: 51820}
}

// TestReaddressedHostMovesItsClaim restarts alpha with the same key and a new
// private_address. It claims the new prefix and deletes its old record; the
// other hosts route the new prefix, and no record of the old one remains.
func TestReaddressedHostMovesItsClaim(t *testing.T) {
	onEveryServer(t, readdressedHostMovesItsClaim)
}

func readdressedHostMovesItsClaim(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	alpha := hosts[0]
	old := alpha.Prefix()
	oldRecord, err := m.bucket.Get(context.Background(), peer.Key(old))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.agents[alpha.Name].Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	alpha.PrivateAddress = netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked().Addr()
	ctx := context.Background()
	m.start(alpha)
	var claimed time.Time
	testkit.EventuallyContext(t, convergeTimeout, "alpha's new claim", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if err := recordsOf(ctx, m, hosts[:1]); err != nil {
			return err
		}
		claimed = time.Now()
		return nil
	})
	m.waitConverged(hosts)
	routed := time.Since(claimed)
	m.waitKeyGone(hosts, peer.Key(old), convergeTimeout, "alpha's old record to go")
	t.Logf("alpha moved from %s to %s: every device routes the new prefix %s after its claim",
		old, alpha.Prefix(), routed.Round(time.Millisecond))
	m.pingAll(hosts)
	// Its controller deletes the old record: its own key elsewhere, older.
	if v := mustMetric(t, alpha, `ikto_claim_repairs_total{action="release"}`); v != 1 {
		t.Errorf("alpha's controller counted %v releases, want 1 (its old record)", v)
	}
	if _, err := m.bucket.Record(ctx, alpha.Prefix()); err != nil {
		t.Fatal(err)
	}
	replayOldRecord(t, m, hosts, old, oldRecord.Value())
}

// replayOldRecord writes alpha's signed record of the prefix it left back
// at its key, as someone replaying an old statement would: no agent routes
// it (alpha's newer record supersedes it), and alpha deletes it again.
func replayOldRecord(t *testing.T, m *mesh, hosts []*harness.Host, old netip.Prefix, value []byte) {
	t.Helper()
	ctx := context.Background()
	at := time.Now()
	if _, err := m.bucket.Create(ctx, peer.Key(old), value); err != nil {
		t.Fatal(err)
	}
	// Watched until alpha has deleted it again, and a second on: alpha
	// stays where its newest record says on every device.
	gone := time.Time{}
	for gone.IsZero() || time.Since(gone) < time.Second {
		for _, h := range hosts[1:] {
			if err := harness.CheckDevice(h, hosts); err != nil {
				t.Fatalf("after the replay of alpha's old record: %v", err)
			}
		}
		if gone.IsZero() && m.bucket.Absent(ctx, peer.Key(old)) == nil {
			gone = time.Now()
		}
		if time.Since(at) > convergeTimeout {
			t.Fatal("alpha did not delete its replayed old record")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("figure: alpha's old record replayed at %s: routed by nobody, deleted by alpha after %s",
		old, gone.Sub(at).Round(time.Millisecond))
	m.waitConverged(hosts)
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
}

// waitKeyGone waits up to limit for key to hold no record (deleted, or a
// marker), failing at once if an agent of hosts exits.
func (m *mesh) waitKeyGone(hosts []*harness.Host, key string, limit time.Duration, what string) {
	m.t.Helper()
	testkit.EventuallyContext(m.t, limit, what, func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return m.bucket.Absent(ctx, key)
	})
}

// TestJoinRightAfterNATSRestart stops NATS for 10 s under two hosts and
// starts a third host the moment it is back: the existing agents reconnect
// within a second, so the newcomer reaches them in about that, not after
// their reconnect back-off.
func TestJoinRightAfterNATSRestart(t *testing.T) {
	onEveryServer(t, joinRightAfterNATSRestart)
}

func joinRightAfterNATSRestart(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo")
	m.server().Shutdown()
	down := time.Now()
	testkit.EventuallyContext(t, time.Minute, "10 s of outage", func(context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if time.Since(down) < 10*time.Second {
			return errors.New("NATS still down")
		}
		return nil
	})
	if err := m.server().Start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	charlie := m.addHosts("charlie")[0]
	m.start(charlie)
	var claimed time.Time
	testkit.EventuallyContext(t, convergeTimeout, "charlie's claim", func(ctx context.Context) error {
		if err := recordsOf(ctx, m, []*harness.Host{charlie}); err != nil {
			return err
		}
		claimed = time.Now()
		return nil
	})
	all := append(hosts, charlie)
	for _, h := range hosts {
		testkit.EventuallyContext(t, convergeTimeout, h.Name+" to list charlie", func(context.Context) error {
			return harness.CheckDevice(h, all)
		})
		t.Logf("%s lists charlie %s after its claim (%s after NATS came back)", h.Name,
			time.Since(claimed).Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	}
	m.waitConverged(all)
	m.pingAll(all)
}

func newPublicKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// holdSteady keeps checking for d that no agent exited and every device still
// lists the mesh, so pingers running meanwhile see the settled mesh too.
func holdSteady(t *testing.T, m *mesh, hosts []*harness.Host, d time.Duration) {
	t.Helper()
	until := time.Now().Add(d)
	testkit.Eventually(t, d+convergeTimeout, "the mesh to stay whole for "+d.String(), func() error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		if err := harness.CheckMesh(hosts); err != nil {
			return testkit.Permanent(err)
		}
		if time.Now().Before(until) {
			return errors.New("still watching")
		}
		return nil
	})
}

// TestDeviceDeletedIsMadeAgain deletes alpha's WireGuard device under its
// running agent (`ip link del`, as an interface manager might). The agent
// notices at once, makes the device again with its address, port and peers,
// and starts the handshakes itself: the mesh is whole again within 2 s.
func TestDeviceDeletedIsMadeAgain(t *testing.T) {
	onEveryServer(t, deviceDeletedIsMadeAgain)
}

func deviceDeletedIsMadeAgain(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	alpha := hosts[0]
	pingers := startLossPingers(t, hosts)
	ctx := context.Background()
	deleted := time.Now()
	if out, err := alpha.Exec(ctx, "ip", "link", "del", alpha.DevName); err != nil {
		t.Fatalf("ip link del %s: %v\n%s", alpha.DevName, err, out)
	}
	m.waitConverged(hosts)
	listed := time.Since(deleted)
	for _, to := range hosts[1:] {
		testkit.EventuallyContext(t, convergeTimeout, "alpha to reach "+to.Name+" again", func(ctx context.Context) error {
			_, err := alpha.Ping(ctx, to.PrivateAddress)
			return err
		})
	}
	whole := time.Since(deleted)
	holdSteady(t, m, hosts, 2*time.Second)
	lost, _ := stopAll(t, pingers)
	t.Logf("device deleted: made again with every peer after %s, every pair answering after %s; %d pings lost in all (20/s per pair)",
		listed.Round(time.Millisecond), whole.Round(time.Millisecond), lost)
	if whole > 2*time.Second {
		t.Errorf("the mesh took %s to be whole again, want within 2s", whole.Round(time.Millisecond))
	}
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
}

// TestWipedBucketComesBackWhole: with charlie's agent stopped (its record
// stays in the bucket, as a stopped host's does), the bucket is deleted.
// alpha and bravo make it again and write back their own records and
// charlie's: a signed record speaks for itself, so whoever writes it back
// changes nothing of what it says. charlie's record is back, byte for byte,
// within 2 s of the bucket being writable, and alpha and bravo never drop
// charlie's peer.
func TestWipedBucketComesBackWhole(t *testing.T) {
	onEveryServer(t, wipedBucketComesBackWhole)
}

func wipedBucketComesBackWhole(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	charlie := hosts[2]
	ctx := context.Background()
	was, err := m.bucket.Get(ctx, peer.Key(charlie.Prefix()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.agents[charlie.Name].Stop(agentStopTimeout); err != nil {
		t.Fatal(err)
	}
	delete(m.agents, charlie.Name) // stopped on purpose
	deleted, writable := deleteBucketAndWait(t, m.bucket)
	testkit.EventuallyContext(t, convergeTimeout, "charlie's record back", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts[:2]); err != nil {
			return err
		}
		e, err := m.bucket.Get(ctx, peer.Key(charlie.Prefix()))
		if err != nil {
			return err
		}
		if string(e.Value()) != string(was.Value()) {
			return testkit.Permanent(fmt.Errorf("charlie's record came back as %s, want %s", e.Value(), was.Value()))
		}
		return nil
	})
	back := time.Since(deleted) - writable
	t.Logf("figure: bucket deleted with charlie stopped: writable again after %s, charlie's record back %s later",
		writable.Round(time.Millisecond), back.Round(time.Millisecond))
	if back > 2*time.Second {
		t.Errorf("charlie's record came back %s after the bucket was writable, want within 2s", back.Round(time.Millisecond))
	}
	for _, h := range hosts[:2] {
		view, err := h.DeviceView()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := view[charlie.PublicKey.String()]; !ok {
			t.Errorf("%s dropped charlie's peer with the bucket", h.Name)
		}
	}
}

// deleteBucketAndWait deletes the mesh's bucket and waits for the agents to make
// it again: when it was deleted, and how long until it existed again.
func deleteBucketAndWait(t *testing.T, b *harness.Bucket) (time.Time, time.Duration) {
	t.Helper()
	deleted := time.Now()
	if err := b.Drop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var writable time.Duration
	testkit.EventuallyContext(t, convergeTimeout, "the bucket to exist again", func(ctx context.Context) error {
		if err := b.Exists(ctx); err != nil {
			return err
		}
		writable = time.Since(deleted)
		return nil
	})
	return deleted, writable
}

// rebuilds is how many times TestBucketRebuiltOnEveryServer deletes the
// bucket on each server: nats-server 2.9 lost the race with a bucket made
// again at once in 3 of 5 tries.
const rebuilds = 10

// TestBucketRebuiltOnEveryServer deletes the bucket under three meshed hosts
// rebuilds times in a row, on the embedded server and on Debian's packaged
// nats-server 2.9.10, whose deletion of a stream's files runs on after the
// deletion answers: a bucket made again too soon is left refusing every
// write. Each time every host's record must be back within 2 s of the
// bucket being writable again, and no ping is lost.
func TestBucketRebuiltOnEveryServer(t *testing.T) {
	onEveryServer(t, func(t *testing.T, m *mesh) {
		hosts := m.startAll("alpha", "bravo", "charlie")
		t.Cleanup(func() {
			if t.Failed() {
				for _, h := range hosts {
					t.Logf("%s's agent:\n%s", h.Name, m.agents[h.Name].LogTail(25))
				}
			}
		})
		m.pingAll(hosts)
		pingers := startLossPingers(t, hosts)
		var worst time.Duration
		for i := range rebuilds {
			deleted, writable := deleteBucketAndWait(t, m.bucket)
			testkit.EventuallyContext(t, convergeTimeout, fmt.Sprintf("deletion %d: every record back", i+1), func(ctx context.Context) error {
				if err := m.exitedEarly(hosts); err != nil {
					return err
				}
				return recordsOf(ctx, m, hosts)
			})
			back := time.Since(deleted) - writable
			worst = max(worst, back)
			t.Logf("deletion %d: writable after %s, every record back %s later", i+1, writable.Round(time.Millisecond), back.Round(time.Millisecond))
			if back > 2*time.Second {
				t.Errorf("deletion %d: records came back %s after the bucket was writable, want within 2s", i+1, back)
			}
		}
		// Someone else deletes the bucket and makes it again at once: on
		// 2.9 the stream may be left refusing every write, and the agents
		// mend it.
		broken := 0
		for i := range rebuilds {
			ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
			remade := time.Now()
			err := m.bucket.Remake(ctx)
			b := err == nil && m.bucket.StoreFailed(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if b {
				broken++
			}
			testkit.EventuallyContext(t, convergeTimeout, fmt.Sprintf("remake %d: every record back", i+1), func(ctx context.Context) error {
				if err := m.exitedEarly(hosts); err != nil {
					return err
				}
				return recordsOf(ctx, m, hosts)
			})
			t.Logf("remake %d (stream broken: %v): every record back after %s", i+1, b, time.Since(remade).Round(time.Millisecond))
		}
		lost, _ := stopAll(t, pingers)
		t.Logf("%d deletions: worst %s from writable to every record back; %d remakes, %d left broken and mended; %d pings lost",
			rebuilds, worst.Round(time.Millisecond), rebuilds, broken, lost)
		if lost != 0 {
			t.Errorf("%d pings lost across the deletions, want 0", lost)
		}
	})
}
