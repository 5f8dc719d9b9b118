package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// forgeryCut is how long bravo stays cut off from NATS while forgeries of
// its record sit in the bucket (IKTO_FORGERY_CUT shortens it while working
// on the test).
func forgeryCut(t *testing.T) time.Duration {
	if s := os.Getenv("IKTO_FORGERY_CUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("IKTO_FORGERY_CUT=%q: %v", s, err)
		}
		return d
	}
	return 2 * time.Minute
}

// TestForgeriesRouteNothingWhileTheirHostIsCutOff: bravo is cut off from
// NATS (its namespace drops what it sends to the server; WireGuard traffic
// still flows), so it can restore nothing. Someone who may write every key
// then writes, as an attacker would: bravo's signed record copied to a free
// prefix as it is, with another endpoint, and with its signature stripped;
// bravo's record over alpha's claim (a host's own prefix) and over
// charlie's (a live claim); garbage over bravo's claim. Every agent keeps
// routing bravo's key where bravo signed it, and nowhere else, for the
// whole cut; pings between every pair lose nothing. Once the cut is lifted,
// bravo restores its claim.
func TestForgeriesRouteNothingWhileTheirHostIsCutOff(t *testing.T) {
	onEveryServer(t, forgeriesWhileCutOff)
}

func forgeriesWhileCutOff(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	alpha, bravo, charlie := hosts[0], hosts[1], hosts[2]
	others := []*harness.Host{alpha, charlie}
	ctx := context.Background()
	signed, err := m.bucket.Record(ctx, bravo.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	if signed.Sig == "" || signed.Seq == 0 {
		t.Fatalf("bravo's record is not signed: %+v", signed)
	}
	pingers := startLossPingers(t, hosts)

	cutNATS(t, m, bravo)
	cutAt := time.Now()
	free1 := netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked()
	free2 := nextFree(t, m, hosts, free1)
	redirected := signed
	redirected.AllowedIP, redirected.AdvertiseAddress = free2.String(), unusedUnderlay(m).String()
	free3 := nextFree(t, m, hosts, free2)
	stripped := redirected
	stripped.AllowedIP, stripped.Sig, stripped.Seq = free3.String(), "", 0
	forgeries := []struct {
		what  string
		key   string
		value []byte
	}{
		{"bravo's record as it is, at a free prefix", peer.Key(free1), signed.Encode()},
		{"bravo's record naming a free prefix and another endpoint", peer.Key(free2), redirected.Encode()},
		{"bravo's record with another endpoint and no signature, at a free prefix", peer.Key(free3), stripped.Encode()},
		{"bravo's record over alpha's claim (a host's own prefix)", peer.Key(alpha.Prefix()), signed.Encode()},
		{"bravo's record over charlie's claim (a live one)", peer.Key(charlie.Prefix()), signed.Encode()},
		{"garbage over bravo's claim", peer.Key(bravo.Prefix()), []byte("forged: not a record")},
	}
	for _, f := range forgeries {
		if _, err := m.bucket.Put(ctx, f.key, f.value); err != nil {
			t.Fatalf("%s: %v", f.what, err)
		}
	}
	// Watched for the whole cut: bravo's key only ever at bravo's prefix
	// and endpoint, on every device.
	want := bravo.ExpectedView()
	samples := 0
	for time.Since(cutAt) < forgeryCut(t) {
		for _, h := range others {
			view, err := h.DeviceView()
			if err != nil {
				t.Fatal(err)
			}
			if got := view[bravo.PublicKey.String()]; got != want {
				t.Fatalf("%s's device has bravo as %+v after %s, want %+v", h.Name, got, time.Since(cutAt).Round(time.Millisecond), want)
			}
		}
		samples++
		time.Sleep(250 * time.Millisecond)
	}
	if err := m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
	lost, gap := stopAll(t, pingers)
	t.Logf("figure: bravo cut off from NATS %s under %d forgeries: %d pings lost (longest gap %s), bravo routed as it signed in all %d samples of both devices",
		forgeryCut(t), len(forgeries), lost, gap.Round(time.Millisecond), samples)
	if lost > 0 {
		t.Errorf("%d pings lost while bravo's record was forged", lost)
	}
	checkRejected(t, m, alpha, map[string]peer.Reason{
		peer.Key(free1): peer.ReasonKeyMismatch, peer.Key(free2): peer.ReasonBadSignature, peer.Key(free3): peer.ReasonUnsigned,
		peer.Key(bravo.Prefix()): peer.ReasonMalformed,
	})

	lifted := time.Now()
	uncutNATS(t, bravo)
	testkit.EventuallyContext(t, 60*time.Second, "every host to restore its claim", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		return recordsOf(ctx, m, hosts)
	})
	t.Logf("figure: cut lifted: every claim restored after %s", time.Since(lifted).Round(time.Millisecond))
	m.waitConverged(hosts)
	m.pingAll(hosts)
}

// nextFree is a free /48 of the mesh after p.
func nextFree(t *testing.T, m *mesh, hosts []*harness.Host, p netip.Prefix) netip.Prefix {
	t.Helper()
	b := p.Addr().As16()
	for range 1 << 16 {
		if b[5]++; b[5] == 0 {
			b[4]++
		}
		next := netip.PrefixFrom(netip.AddrFrom16(b), 48)
		held := !m.net.Mesh.Contains(next.Addr())
		for _, h := range hosts {
			held = held || h.Prefix() == next
		}
		if !held {
			return next
		}
	}
	t.Fatal("no free /48 in the mesh")
	return netip.Prefix{}
}

// checkRejected waits until h's agent reports each key rejected for its
// reason (/v1/status).
func checkRejected(t *testing.T, m *mesh, h *harness.Host, want map[string]peer.Reason) {
	t.Helper()
	testkit.EventuallyContext(t, convergeTimeout, h.Name+" to report the forgeries", func(ctx context.Context) error {
		st, err := h.Status(ctx)
		if err != nil {
			return err
		}
		got := map[string]peer.Reason{}
		for _, r := range st.Rejected {
			got[r.Key] = peer.Reason(r.Reason)
		}
		for k, r := range want {
			if got[k] != r {
				return fmt.Errorf("%s rejected as %q, want %q (all: %v)", k, got[k], r, got)
			}
		}
		return nil
	})
}

// cutNATS makes h's namespace drop what it sends to the NATS server: the
// agent's connection hangs as over a broken path, and WireGuard still flows.
func cutNATS(t *testing.T, m *mesh, h *harness.Host) {
	t.Helper()
	ctx := context.Background()
	addr := m.natsAddr()
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
