package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// legacyHost does what an ikto 0.3.0 agent does, with the tools it used:
// a wireguard-go device set up with wg and ip, an unsigned record with
// 0.3.0's five fields (written with Create), and a peer for every other
// record it reads. No ikto 0.3.0 binary is at hand here, so this stands in
// for one: what the new agents see of it (an unsigned record, a plain
// WireGuard peer) is the same.
type legacyHost struct {
	h   *harness.Host
	dev *harness.Process
}

func startLegacyHost(t *testing.T, m *mesh, h *harness.Host) *legacyHost {
	t.Helper()
	requireTool(t, "wireguard-go", "wireguard-go")
	ctx := context.Background()
	dev, err := h.StartExternalDevice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"wg", "set", h.DevName, "private-key", h.KeyPath, "listen-port", "51820"},
		{"ip", "address", "add", fmt.Sprintf("%s/%d", h.PrivateAddress, m.net.Mesh.Bits()), "dev", h.DevName},
		{"ip", "link", "set", h.DevName, "up"},
	} {
		if out, err := h.Exec(ctx, args[0], args[1:]...); err != nil {
			t.Fatalf("%v on %s: %v\n%s", args, h.Name, err, out)
		}
	}
	rec := fmt.Sprintf(`{"name":%q,"public_key":%q,"advertise_address":%q,"allowed_ip":%q,"wg_port":51820}`,
		h.Name, h.PublicKey.String(), h.Addr.String(), h.Prefix().String())
	if _, err := m.bucket.Create(ctx, peer.Key(h.Prefix()), []byte(rec)); err != nil {
		t.Fatal(err)
	}
	return &legacyHost{h: h, dev: dev}
}

// follow gives the legacy device a peer for every other record in the
// bucket, as 0.3.0 does from its watch.
func (l *legacyHost) follow(t *testing.T, m *mesh) {
	t.Helper()
	ctx := context.Background()
	recs, err := m.bucket.Records(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.PublicKey == l.h.PublicKey.String() {
			continue
		}
		if out, err := l.h.Exec(ctx, "wg", "set", l.h.DevName, "peer", r.PublicKey,
			"endpoint", fmt.Sprintf("%s:%d", r.AdvertiseAddress, r.WGPort), "allowed-ips", r.AllowedIP); err != nil {
			t.Fatalf("wg set peer %s on %s: %v\n%s", r.Name, l.h.Name, err, out)
		}
	}
}

// TestLegacyAgentMeshes: a host of ikto 0.3.0 (unsigned record) meshes with
// agents in the default membership_signatures (prefer); an agent restarted
// with require drops it and names the reason in its status.
func TestLegacyAgentMeshes(t *testing.T) {
	onEveryServer(t, legacyAgentMeshes)
}

func legacyAgentMeshes(t *testing.T, m *mesh) {
	hosts := m.addHosts("alpha", "bravo", "legacy")
	legacy := startLegacyHost(t, m, hosts[2])
	for _, h := range hosts[:2] {
		m.start(h)
	}
	testkit.EventuallyContext(t, convergeTimeout, "alpha's and bravo's claims", func(ctx context.Context) error {
		return recordsOf(ctx, m, hosts)
	})
	legacy.follow(t, m)
	for _, h := range hosts[:2] {
		testkit.Eventually(t, convergeTimeout, h.Name+" to add the legacy host", func() error {
			return harness.CheckDevice(h, hosts)
		})
	}
	m.pingAll(hosts)
	t.Logf("an unsigned (0.3.0) record meshes with signing agents under prefer")

	bravo := hosts[1]
	if err := m.agents[bravo.Name].Stop(agentStopTimeout); err != nil {
		t.Fatal(err)
	}
	cfg := m.config(bravo)
	cfg.MembershipSignatures = "require"
	m.startWith(bravo, cfg)
	key := peer.Key(hosts[2].Prefix())
	testkit.EventuallyContext(t, convergeTimeout, "bravo to refuse the unsigned record", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts[:2]); err != nil {
			return err
		}
		st, err := bravo.Status(ctx)
		if err != nil {
			return err
		}
		for _, r := range st.Rejected {
			if r.Key == key && r.Reason == string(peer.ReasonUnsigned) && strings.Contains(r.Detail, "require") {
				return harness.CheckDevice(bravo, hosts[:2])
			}
		}
		return fmt.Errorf("bravo's rejections: %+v", st.Rejected)
	})
	if err := harness.CheckDevice(hosts[0], hosts); err != nil {
		t.Errorf("alpha (prefer) after bravo's restart: %v", err)
	}
}
