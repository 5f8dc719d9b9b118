package integration_test

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
)

// TestSoakAuditLog checks the soak's log audit on lines as the agent writes
// them, without any network: the soak's verdicts are only as good as it.
func TestSoakAuditLog(t *testing.T) {
	start := time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC)
	own := netip.MustParsePrefix("fd12:1::/48")
	other := netip.MustParsePrefix("fd12:2::/48")
	line := func(at time.Duration, msg, peer string, prefix netip.Prefix) string {
		return fmt.Sprintf("time=%s level=INFO msg=%q peer=%s prefix=%s endpoint=198.18.0.2:51820 key=\"peers.x==\"",
			start.Add(at).Format(time.RFC3339Nano), msg, peer, prefix)
	}
	for _, tc := range []struct {
		name  string
		lines []string
		want  []string // substrings of the violations, in order
	}{
		{"own prefix", []string{line(0, "peer added", "alpha", own)}, nil},
		{"intruder counted, not failed", []string{line(0, "peer added", soakIntruderName+"3", own)}, nil},
		{"unnamed left to the sampler", []string{`time=2026-12-01T11:00:00Z level=INFO msg="peer added" peer="" prefix="" endpoint=198.18.0.2:51820 key=""`}, nil},
		{"prefix never claimed", []string{line(0, "peer updated", "alpha", other)}, []string{"never claimed"}},
		{"forged", []string{line(0, "peer updated", soakForgedName+"alpha-4", other)}, []string{"hostile record"}},
		{"garbage", []string{line(0, "peer added", soakGarbageName+"5", other)}, []string{"hostile record"}},
		{"evicted, removed a moment before evict returned, added again", []string{
			line(59*time.Second+900*time.Millisecond, "peer removed", "bravo", other),
			line(65*time.Second, "peer added", "bravo", other),
		}, []string{"again after it had removed it"}},
		{"evicted host updated late by a slow agent", []string{
			line(61*time.Second, "peer updated", "bravo", other),
		}, nil},
		{"evicted host applied past the grace", []string{
			line(time.Minute+soakRevokeGrace+time.Second, "peer added", "bravo", other),
		}, []string{"after its eviction"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newSoakModel(start)
			m.claim("alpha", wgtypes.Key{1}, own)
			m.claim("bravo", wgtypes.Key{2}, other)
			m.evicted[wgtypes.Key{2}] = start.Add(time.Minute)
			path := harnesstest.WriteFile(t, filepath.Join(t.TempDir(), "agent.log"), []byte(strings.Join(tc.lines, "\n")+"\n"), 0o600)
			if _, _, _, err := soakAuditLog(m, "charlie", path); err != nil {
				t.Fatal(err)
			}
			wantViolations(t, m.failures(), tc.want)
		})
	}
}

// TestSoakCheckDevice checks the sampler's verdict on one read of a device.
func TestSoakCheckDevice(t *testing.T) {
	start := time.Now()
	pfx := func(s string) net.IPNet {
		p := netip.MustParsePrefix(s)
		return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}
	}
	peerOf := func(k wgtypes.Key, prefixes ...string) wgtypes.Peer {
		p := wgtypes.Peer{PublicKey: k}
		for _, s := range prefixes {
			p.AllowedIPs = append(p.AllowedIPs, pfx(s))
		}
		return p
	}
	alpha, bravo, junk, intruder, stranger := wgtypes.Key{1}, wgtypes.Key{2}, wgtypes.Key{3}, wgtypes.Key{4}, wgtypes.Key{5}
	for _, tc := range []struct {
		name  string
		peers []wgtypes.Peer
		want  []string
	}{
		{"the mesh", []wgtypes.Peer{peerOf(alpha, "fd12:1::/48"), peerOf(bravo, "fd12:2::/48")}, nil},
		{"intruder with its victim's prefix", []wgtypes.Peer{peerOf(intruder, "fd12:2::/48")}, nil},
		{"forged prefix", []wgtypes.Peer{peerOf(alpha, "fd12:9::/48")}, []string{"never claimed"}},
		{"garbage key", []wgtypes.Peer{peerOf(junk, "fd12:3::/48")}, []string{"breaks a rule"}},
		{"unknown key", []wgtypes.Peer{peerOf(stranger, "fd12:5::/48")}, []string{"nobody in the soak"}},
		{"overlap", []wgtypes.Peer{peerOf(alpha, "fd12:1::/48"), peerOf(intruder, "fd12::/16")}, []string{"not the prefix it took", "overlap", "inside the host's own"}},
		{"own prefix", []wgtypes.Peer{peerOf(intruder, "fd12:7::/48")}, []string{"not the prefix it took", "inside the host's own"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newSoakModel(start)
			m.claim("alpha", alpha, netip.MustParsePrefix("fd12:1::/48"))
			m.claim("bravo", bravo, netip.MustParsePrefix("fd12:2::/48"))
			m.addGarbage(junk)
			m.addIntruder(intruder, netip.MustParsePrefix("fd12:2::/48"))
			m.checkDevice(soakTarget{host: &harness.Host{Name: "charlie"}, prefix: netip.MustParsePrefix("fd12:7::/48")}, tc.peers)
			wantViolations(t, m.failures(), tc.want)
		})
	}
}

// wantViolations checks that the audit found one violation per want, in
// order, each saying its want.
func wantViolations(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("violations %q, want %d matching %q", got, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("violation %q does not say %q", got[i], w)
		}
	}
}

// TestSoakTopologies reads IKTO_SOAK_NATS as make test and make soak write
// it: topologies without a chaos time of their own share IKTO_SOAK.
func TestSoakTopologies(t *testing.T) {
	for _, tc := range []struct {
		env, want string // want: the topologies' String, or the error's start
	}{
		{"", "[single:30s cluster:30s]"},
		{"both", "[single:30s cluster:30s]"},
		{"single", "[single:1m0s]"},
		{"single,debian:30s", "[single:1m0s debian:30s]"},
		{"debian:10s,cluster:20s", "[debian:10s cluster:20s]"},
		{"single,debian", "[single:30s debian:30s]"},
		{"kernel", `"kernel": no topology "kernel"`},
		{"single,single", `"single,single": single twice`},
		{"debian:0s", `"debian:0s": debian's chaos time "0s"`},
	} {
		topos, err := soakTopologies(tc.env, time.Minute)
		got := fmt.Sprint(topos)
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("soakTopologies(%q) = %s, want %s", tc.env, got, tc.want)
		}
	}
}
