package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// checkPeers is nil when h's device lists exactly the other hosts of mesh
// and extra, by public key.
func checkPeers(h *harness.Host, mesh []*harness.Host, extra map[string]harness.PeerView) error {
	want := map[string]harness.PeerView{}
	for _, p := range mesh {
		if p != h {
			want[p.PublicKey.String()] = p.ExpectedView()
		}
	}
	maps.Copy(want, extra)
	got, err := h.DeviceView()
	if err != nil {
		return err
	}
	if !maps.Equal(want, got) {
		return fmt.Errorf("device %s of %s:\nwant %v\n got %v", h.DevName, h.Name, want, got)
	}
	return nil
}

// checkRejectedEverywhere puts the record and checks every agent's handling
// of it, then deletes it and checks again.
func checkRejectedEverywhere(t *testing.T, w *hostileWorld, tc hostileCase, key string, value []byte) {
	t.Helper()
	ctx := context.Background()
	rw := &rejectionWatch{w: w, tc: tc, key: key, before: map[string]float64{}}
	for _, h := range w.hosts {
		rw.before[h.Name] = mustMetric(t, h, rejectionsTotal(rw.reasonOf(h)))
	}
	var err error
	if rw.rev, err = w.m.bucket.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	testkit.EventuallyContext(t, convergeTimeout, "every agent to reject the record", func(ctx context.Context) error {
		return rw.steady(ctx, 1)
	})
	// Once per revision: two more reconcile passes on every agent (resyncs
	// re-resolve the whole table) count and log nothing new.
	runs := map[string]float64{}
	for _, h := range w.hosts {
		runs[h.Name] = mustMetric(t, h, reconcileRuns)
	}
	testkit.EventuallyContext(t, convergeTimeout, "two more reconcile passes on every agent", func(ctx context.Context) error {
		if err := rw.steady(ctx, 1); err != nil {
			return testkit.Permanent(err)
		}
		return morePasses(ctx, w.hosts, runs, 2)
	})
	for _, h := range w.hosts {
		if n := rejectionLogLines(w.m.agents[h.Name].Logs(), key, rw.rev); n != 1 {
			t.Errorf("%s logged the rejection of %s revision %d %d times, want once", h.Name, key, rw.rev, n)
		}
	}
	if err := w.m.bucket.Delete(ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	testkit.EventuallyContext(t, convergeTimeout, "every agent to forget the removed record", func(ctx context.Context) error {
		return rw.steady(ctx, 0)
	})
}

// rejectionWatch follows one hostile record through every agent's metrics.
type rejectionWatch struct {
	w      *hostileWorld
	tc     hostileCase
	key    string
	rev    uint64
	before map[string]float64 // each agent's rejections total before the put
}

// reasonOf is the reason h must give.
func (rw *rejectionWatch) reasonOf(h *harness.Host) peer.Reason {
	if h.Name == rw.tc.keyOf {
		return peer.ReasonOwnKey
	}
	return rw.tc.reason
}

// steady is nil when every agent runs, has its device as before the record,
// has counted the record's revision exactly once, and reports gauge records
// rejected for its reason now (1 while it is there, 0 once removed). Any
// damage, or a second count, is Permanent.
func (rw *rejectionWatch) steady(ctx context.Context, gauge float64) error {
	if err := rw.w.m.exitedEarly(rw.w.hosts); err != nil {
		return err
	}
	for _, h := range rw.w.hosts {
		if err := harness.CheckDevice(h, rw.w.hosts); err != nil {
			return testkit.Permanent(err)
		}
		reason := rw.reasonOf(h)
		total, err := metricValue(ctx, h.SocketPath, rejectionsTotal(reason))
		if err != nil {
			return err
		}
		if want := rw.before[h.Name] + 1; total > want {
			return testkit.Permanent(fmt.Errorf("%s counted revision %d %v times", h.Name, rw.rev, total-rw.before[h.Name]))
		} else if total < want {
			return fmt.Errorf("%s: rejections total %v, want %v", h.Name, total, want)
		}
		now, err := metricValue(ctx, h.SocketPath, fmt.Sprintf("ikto_records_rejected{reason=%q}", reason))
		if err != nil {
			return err
		}
		if now != gauge {
			return fmt.Errorf("%s: %s records rejected now: %v, want %v", h.Name, reason, now, gauge)
		}
	}
	return nil
}

// reconcileRuns is the series counting an agent's successful passes.
const reconcileRuns = `ikto_reconcile_runs_total{result="ok"}`

// morePasses is nil once every host's agent has made n passes more than runs.
func morePasses(ctx context.Context, hosts []*harness.Host, runs map[string]float64, n float64) error {
	for _, h := range hosts {
		r, err := metricValue(ctx, h.SocketPath, reconcileRuns)
		if err != nil {
			return err
		}
		if r < runs[h.Name]+n {
			return fmt.Errorf("%s: %v reconcile passes since, want %v", h.Name, r-runs[h.Name], n)
		}
	}
	return nil
}

func rejectionsTotal(r peer.Reason) string {
	return fmt.Sprintf("ikto_record_rejections_total{reason=%q}", r)
}

// rejectionLogLines counts the "record rejected" lines about key at rev.
func rejectionLogLines(logs, key string, rev uint64) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `msg="record rejected"`) && strings.Contains(line, key) &&
			strings.Contains(line, fmt.Sprintf("revision=%d ", rev)) {
			n++
		}
	}
	return n
}

// unusedUnderlay is an underlay address no host has: a hostile record's
// endpoint, reachable by nobody.
func unusedUnderlay(m *mesh) netip.Addr {
	a := m.net.Subnet.Addr()
	for range 250 {
		a = a.Next()
	}
	return a
}

func mustMetric(t *testing.T, h *harness.Host, series string) float64 {
	t.Helper()
	v, err := metricValue(context.Background(), h.SocketPath, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// metricValue reads one series (name{labels} exactly as printed) from the
// agent's /metrics over its socket.
func metricValue(ctx context.Context, socket, series string) (float64, error) {
	body, err := harness.SocketGet(ctx, socket, "/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no series %s in /metrics", socket, series)
}

// checkRemovedByItsKey puts a record that reuses host keyOf's public key
// under another prefix: keyOf's agent deletes it (a record of its own key
// is its to remove, whoever wrote it), and no device lists it meanwhile.
func checkRemovedByItsKey(t *testing.T, w *hostileWorld, tc hostileCase, key string, value []byte) {
	t.Helper()
	ctx := context.Background()
	var owner *harness.Host
	for _, h := range w.hosts {
		if h.Name == tc.keyOf {
			owner = h
		}
	}
	released := mustMetric(t, owner, `ikto_claim_repairs_total{action="release"}`)
	if _, err := w.m.bucket.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	testkit.EventuallyContext(t, convergeTimeout, tc.keyOf+" to delete the record of its key", func(ctx context.Context) error {
		for _, h := range w.hosts {
			if err := checkPeers(h, w.hosts, nil); err != nil {
				return testkit.Permanent(fmt.Errorf("a device applied the copy of %s's key: %w", tc.keyOf, err))
			}
		}
		if err := w.m.bucket.Absent(ctx, key); err != nil {
			return fmt.Errorf("still in the bucket: %v", err)
		}
		return nil
	})
	if v := mustMetric(t, owner, `ikto_claim_repairs_total{action="release"}`); v != released+1 {
		t.Errorf("%s counted %v releases, want %v", tc.keyOf, v, released+1)
	}
	w.m.waitConverged(w.hosts)
}
