package integration_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// TestKeyRotation moves bravo to a new WireGuard key while pings run both
// ways between every pair at 20/s: a new private_key_path and SIGHUP. The
// old key hands bravo's prefix over in the new key's record; every peer
// switches to the new key, losing at most one ping per direction, and the
// old key counts for nothing afterwards (a record of it, even newer, is
// routed nowhere).
func TestKeyRotation(t *testing.T) {
	onEveryServer(t, keyRotation)
}

func keyRotation(t *testing.T, m *mesh) {
	hosts := m.startAll("alpha", "bravo", "charlie")
	m.pingAll(hosts)
	bravo := hosts[1]
	ctx := context.Background()
	oldRecord, err := m.bucket.Record(ctx, bravo.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	oldKey, oldPath := bravo.PublicKey, bravo.KeyPath
	path := filepath.Join(bravo.Dir, "rotated.key")
	next, err := config.CreatePrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pingers := startLossPingers(t, hosts)
	time.Sleep(time.Second) // pings flowing before the rotation
	cfg := m.config(bravo)
	cfg.PrivateKeyPath = path
	if _, err := bravo.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	if err := m.agents[bravo.Name].Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	bravo.PublicKey, bravo.KeyPath = next.PublicKey(), path
	for _, h := range []*harness.Host{hosts[0], hosts[2]} {
		testkit.Eventually(t, convergeTimeout, h.Name+" to route bravo's new key", func() error {
			if err := m.exitedEarly(hosts); err != nil {
				return err
			}
			return harness.CheckDevice(h, hosts)
		})
	}
	switched := time.Since(rotated)
	time.Sleep(2 * time.Second) // pings flowing after it
	worst := 0
	for _, p := range pingers {
		r, err := p.Stop()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s → %s: %d sent, %d lost, longest gap %s", p.From.Name, p.To, r.Sent, len(r.Lost), r.LongestGap.Round(time.Millisecond))
		worst = max(worst, len(r.Lost))
	}
	t.Logf("figure: key rotation of bravo: every peer routes the new key %s after SIGHUP; at most %d pings lost in one direction (20/s)",
		switched.Round(time.Millisecond), worst)
	if worst > 1 {
		t.Errorf("%d pings lost in one direction across the rotation, want at most 1", worst)
	}
	rec, err := m.bucket.Record(ctx, bravo.Prefix())
	if err != nil || rec.PublicKey != next.PublicKey().String() || rec.Handover.From != oldKey.String() {
		t.Fatalf("bravo's record after the rotation: %+v, %v; want the new key, handed over by the old", rec, err)
	}

	// The old key is retired: a record it signs now, with a higher seq,
	// routes nothing.
	oldPriv, err := config.LoadPrivateKey(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	free := netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked()
	late := oldRecord
	late.AllowedIP, late.Seq = free.String(), rec.Seq+1_000_000
	rules := peer.Rules{Mesh: m.net.Mesh, Bits: 48, Bucket: bucketName}
	if err := rules.SignRecord(&late, oldPriv); err != nil {
		t.Fatal(err)
	}
	if _, err := m.bucket.Create(ctx, peer.Key(free), late.Encode()); err != nil {
		t.Fatal(err)
	}
	checkRejected(t, m, hosts[0], map[string]peer.Reason{peer.Key(free): peer.ReasonSuperseded})
	m.waitConverged(hosts)
	m.pingAll(hosts)
	if st, err := bravo.Status(ctx); err != nil || st.Self.PublicKey != next.PublicKey().String() {
		t.Errorf("bravo's status after the rotation: self %+v, %v", st.Self, err)
	}
}
