package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// driftResync is the agents' resync_interval in the drift test: repairs are
// expected within about one period.
const driftResync = time.Second

// Peers changed on a device by hand, with wgctrl or the wg tool, are put
// back by the agent's resync, and a peer it does not know is removed.
func TestDriftIsRepaired(t *testing.T) {
	t.Parallel()
	requireTool(t, "wg", "wireguard-tools")
	m := newMesh(t)
	hosts := m.addHosts("alpha", "bravo", "charlie")
	for _, h := range hosts {
		cfg := m.config(h)
		cfg.ResyncInterval = driftResync.String()
		m.startWith(h, cfg)
	}
	m.waitConverged(hosts)
	alpha, bravo, charlie := hosts[0], hosts[1], hosts[2]
	// Where a hijacked peer would send: a host of this test, a port nobody
	// listens on.
	elsewhere := &net.UDPAddr{IP: charlie.Addr.AsSlice(), Port: 9}
	foreign := newPublicKey(t)

	for _, tc := range []struct {
		name  string
		drift func() error
	}{
		{"peer removed with wgctrl", func() error {
			return configure(alpha, wgtypes.PeerConfig{PublicKey: bravo.PublicKey, Remove: true})
		}},
		{"peer removed with wg", func() error {
			return wg(alpha, "set", alpha.DevName, "peer", charlie.PublicKey.String(), "remove")
		}},
		{"every peer removed with wg", func() error {
			return wg(alpha, "set", alpha.DevName, "peer", bravo.PublicKey.String(), "remove", "peer", charlie.PublicKey.String(), "remove")
		}},
		{"endpoint changed", func() error {
			return configure(alpha, wgtypes.PeerConfig{PublicKey: bravo.PublicKey, UpdateOnly: true, Endpoint: elsewhere})
		}},
		{"allowed-ips widened to everything", func() error {
			return configure(alpha, wgtypes.PeerConfig{PublicKey: bravo.PublicKey, UpdateOnly: true, ReplaceAllowedIPs: true,
				AllowedIPs: []net.IPNet{{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}})
		}},
		{"foreign peer added", func() error {
			return wg(alpha, "set", alpha.DevName, "peer", foreign.String(), "endpoint", elsewhere.String(), "allowed-ips", "fd00:dead::/48")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.drift(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			testkit.Eventually(t, convergeTimeout, "the agent to repair alpha's device", func() error {
				if err := m.exitedEarly(hosts); err != nil {
					return err
				}
				return harness.CheckDevice(alpha, hosts)
			})
			t.Logf("repaired in %s (resync_interval %s)", time.Since(start).Round(time.Millisecond), driftResync)
		})
	}
	m.pingAll(hosts)

	// While NATS is down the device is left exactly as it is, drift and
	// all; once NATS answers again the drift goes.
	m.nats.Shutdown()
	testkit.EventuallyContext(t, convergeTimeout, "alpha to notice NATS is down", func(ctx context.Context) error {
		st, err := alpha.Status(ctx)
		if err == nil && st.NATS.Connected {
			err = errors.New("still connected")
		}
		return err
	})
	if err := configure(alpha, wgtypes.PeerConfig{PublicKey: bravo.PublicKey, Remove: true}); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	testkit.Eventually(t, convergeTimeout, "three resync periods without NATS", func() error {
		peers, err := alpha.DeviceView()
		if err != nil {
			return testkit.Permanent(err)
		}
		if _, ok := peers[bravo.PublicKey.String()]; ok {
			return testkit.Permanent(errors.New("alpha's device was changed while NATS was down"))
		}
		if time.Since(left) < 3*driftResync {
			return errors.New("still watching")
		}
		return nil
	})
	if err := m.nats.Start(); err != nil {
		t.Fatal(err)
	}
	m.waitConverged(hosts)
	m.pingAll(hosts)
}

// configure changes one peer on h's device behind its agent's back, with
// wgctrl from inside h's namespace (where a kernel device lives).
func configure(h *harness.Host, pc wgtypes.PeerConfig) error {
	return h.ConfigureDevice(wgtypes.Config{Peers: []wgtypes.PeerConfig{pc}})
}

// wg runs the wg tool inside h's namespace, as an operator on that host.
func wg(h *harness.Host, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.Exec(ctx, "wg", args...); err != nil {
		return err
	}
	return nil
}

// requireTool skips the test when bin is missing, or fails it when
// IKTO_REQUIRE_INTEGRATION=1, as for the harness's own prerequisites.
func requireTool(t *testing.T, bin, pkg string) {
	t.Helper()
	harnesstest.Require(t)
	if _, err := exec.LookPath(bin); err != nil {
		msg := fmt.Sprintf("%s not in PATH (apt-get install %s)", bin, pkg)
		if os.Getenv(harnesstest.RequireEnv) == "1" {
			t.Fatalf("%s (%s=1)", msg, harnesstest.RequireEnv)
		}
		t.Skip(msg)
	}
}
