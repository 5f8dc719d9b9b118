package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// healthWindow bounds how long ikto-admin health takes to see a cut path:
// an agent calls a peer unreachable after 15 s of sending without hearing
// back, and says so in its next heartbeat (every 10 s).
const healthWindow = 60 * time.Second

// fleetHealth is what ikto-admin health -o json prints.
type fleetHealth struct {
	OK          bool `json:"ok"`
	Unreachable []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"unreachable"`
	Behind []struct{ Name string } `json:"behind"`
	Silent []struct{ Name string } `json:"silent"`
}

// TestHealthSeesACutPath meshes three hosts with traffic flowing, cuts the
// underlay between alpha and bravo with firewall drops inside their
// namespaces, and checks that ikto-admin health reports exactly that pair and
// exits non-zero, then all well again once the cut is lifted.
func TestHealthSeesACutPath(t *testing.T) {
	t.Parallel()
	m, bins, hosts, cfg := startAdminMesh(t, "alpha", "bravo", "charlie")
	m.pingAll(hosts)
	pingers := startLossPingers(t, hosts)
	defer stopAll(t, pingers)
	alpha, bravo := hosts[0], hosts[1]
	health := func() (int, fleetHealth, string) {
		code, stdout, stderr := runAdmin(t, bins, "-c", cfg, "health", "-o", "json")
		var h fleetHealth
		if err := json.Unmarshal([]byte(stdout), &h); err != nil {
			t.Fatalf("health -o json: %v\n%s%s", err, stdout, stderr)
		}
		return code, h, stdout
	}
	testkit.Eventually(t, healthWindow, "the fleet to be healthy", func() error {
		if code, h, out := health(); code != 0 || !h.OK {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})

	// The cut drops what arrives from the other end, in both namespaces, as
	// a broken link between them would: each still sends.
	ctx := context.Background()
	cut := time.Now()
	for _, side := range []struct{ h, other *harness.Host }{{alpha, bravo}, {bravo, alpha}} {
		for _, args := range [][]string{
			{"add", "table", "inet", "ikto_cut"},
			{"add", "chain", "inet", "ikto_cut", "in", "{ type filter hook input priority 0; }"},
			{"add", "rule", "inet", "ikto_cut", "in", "ip", "saddr", side.other.Addr.String(), "drop"},
		} {
			if out, err := side.h.Exec(ctx, "nft", args...); err != nil {
				t.Fatalf("nft %v on %s: %v\n%s", args, side.h.Name, err, out)
			}
		}
	}
	testkit.Eventually(t, healthWindow, "health to report alpha and bravo", func() error {
		code, h, out := health()
		if code == 0 || h.OK {
			return fmt.Errorf("still healthy: %s", out)
		}
		pairs := map[string]bool{}
		for _, u := range h.Unreachable {
			pairs[u.From+"→"+u.To] = true
		}
		for p := range pairs {
			if p != "alpha→bravo" && p != "bravo→alpha" {
				return testkit.Permanent(fmt.Errorf("health reports a pair that is not cut: %s", out))
			}
		}
		if len(h.Behind)+len(h.Silent) != 0 {
			return testkit.Permanent(fmt.Errorf("health reports more than the cut: %s", out))
		}
		if !pairs["alpha→bravo"] || !pairs["bravo→alpha"] {
			return fmt.Errorf("not both directions yet: %s", out) // each end says so in its own next heartbeat
		}
		return nil
	})
	t.Logf("health reported the cut pair %s after the cut", time.Since(cut).Round(time.Second))

	for _, h := range []*harness.Host{alpha, bravo} {
		if out, err := h.Exec(ctx, "nft", "delete", "table", "inet", "ikto_cut"); err != nil {
			t.Fatalf("lift the cut on %s: %v\n%s", h.Name, err, out)
		}
	}
	lifted := time.Now()
	testkit.Eventually(t, healthWindow, "the fleet to be healthy again", func() error {
		if code, h, out := health(); code != 0 || !h.OK {
			return errors.New(out)
		}
		return nil
	})
	t.Logf("health was all well again %s after the cut was lifted", time.Since(lifted).Round(time.Second))
}
