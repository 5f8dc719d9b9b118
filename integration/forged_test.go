package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// TestForgedCopyWaitsWhileItsHostIsCutOff: bravo is cut off from NATS (its
// namespace drops what it sends to the server; WireGuard traffic still
// flows). Someone who may write every key then copies bravo's record, with
// an endpoint of their own, to a free prefix, and overwrites bravo's claim
// with garbage. bravo cannot restore its record nor release the copy, which
// is now its key's only record. The other agents keep bravo at its prefix
// (its record went without a command) and do not route the copy: traffic
// with bravo is not cut. Once the cut is lifted, bravo restores its claim
// and releases the copy.
func TestForgedCopyWaitsWhileItsHostIsCutOff(t *testing.T) {
	t.Parallel()
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	alpha, bravo, charlie := hosts[0], hosts[1], hosts[2]
	others := []*harness.Host{alpha, charlie}
	ctx := context.Background()
	pingers := startLossPingers(t, hosts)

	cutNATS(t, m, bravo)
	forged := copyRecord(t, m, bravo, bravo)
	at := netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked()
	forged.AllowedIP, forged.AdvertiseAddress = at.String(), unusedUnderlay(m).String()
	if _, err := m.bucket.Create(ctx, peer.Key(at), forged.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.bucket.Put(ctx, peer.Key(bravo.Prefix()), []byte("soak: not a record")); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	// Watched for a while: the copy's prefix never reaches a device, and
	// bravo keeps its own prefix and endpoint.
	want := bravo.ExpectedView()
	for deadline := written.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, h := range others {
			view, err := h.DeviceView()
			if err != nil {
				t.Fatal(err)
			}
			if got := view[bravo.PublicKey.String()]; got != want {
				t.Fatalf("%s's device has bravo as %+v, want %+v (the forged copy routes %s)", h.Name, got, want, at)
			}
		}
	}
	for _, h := range others {
		if !strings.Contains(m.agents[h.Name].Logs(), "keeping the peer at its prefix") {
			t.Fatalf("%s's log does not say it held bravo's peer: did it read the writes?", h.Name)
		}
	}
	for _, h := range others {
		if logs := m.agents[h.Name].Logs(); strings.Contains(logs, "prefix="+at.String()+" endpoint") {
			t.Fatalf("%s applied the forged copy at %s:\n%s", h.Name, at, logs)
		}
	}
	lost, gap := stopAll(t, pingers)
	t.Logf("bravo cut off from NATS, a copy of its key at %s and garbage over its claim: %d pings lost over %s (longest gap %s)",
		at, lost, time.Since(written).Round(time.Millisecond), gap.Round(time.Millisecond))
	if lost > 0 {
		t.Errorf("%d pings lost while bravo was held at its prefix", lost)
	}

	lifted := time.Now()
	uncutNATS(t, bravo)
	testkit.EventuallyContext(t, 60*time.Second, "bravo to restore its claim", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return recordsOf(ctx, m, hosts[1:2])
	})
	m.waitKeyGone(hosts, peer.Key(at), convergeTimeout, "bravo to release the copy of its key")
	t.Logf("cut lifted: bravo restored its claim and released the copy after %s", time.Since(lifted).Round(time.Millisecond))
	m.waitConverged(hosts)
	m.pingAll(hosts)
}

// cutNATS makes h's namespace drop what it sends to the NATS server: the
// agent's connection hangs as over a broken path, and WireGuard still flows.
func cutNATS(t *testing.T, m *mesh, h *harness.Host) {
	t.Helper()
	ctx := context.Background()
	addr := m.nats.Addr()
	for _, args := range [][]string{
		{"add", "table", "inet", "ikto_natscut"},
		{"add", "chain", "inet", "ikto_natscut", "out", "{ type filter hook output priority 0; }"},
		{"add", "rule", "inet", "ikto_natscut", "out", "ip", "daddr", addr.Addr().String(), "tcp", "dport", fmt.Sprint(addr.Port()), "drop"},
	} {
		if out, err := h.Exec(ctx, "nft", args...); err != nil {
			t.Fatalf("nft %v on %s: %v\n%s", args, h.Name, err, out)
		}
	}
	// The table lives in h's namespace and goes with it.
}

// uncutNATS lifts cutNATS.
func uncutNATS(t *testing.T, h *harness.Host) {
	t.Helper()
	if out, err := h.Exec(context.Background(), "nft", "delete", "table", "inet", "ikto_natscut"); err != nil {
		t.Errorf("lift the NATS cut on %s: %v\n%s", h.Name, err, out)
	}
}
