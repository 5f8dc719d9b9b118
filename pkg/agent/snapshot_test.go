package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/state"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// stop cancels the agent and waits for Run to return.
func (h *host) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	return h.waitExit(t)
}

func snapshotPath(cfg *config.Config) string { return state.Path(cfg.StateDir, cfg.WGDevName) }

func identityOf(t *testing.T, cfg *config.Config) state.Identity {
	t.Helper()
	k, err := config.LoadPrivateKey(cfg.PrivateKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	return state.Identity{Device: cfg.WGDevName, PublicKey: k.PublicKey(), Prefix: settings(t, cfg).Prefix,
		Rules: peer.Rules{Mesh: settings(t, cfg).Mesh, Bits: cfg.SubnetPrefix}}
}

// snapshotPrefixes reads the agent's snapshot back as the agent would.
func snapshotPrefixes(t *testing.T, cfg *config.Config) (map[string]bool, error) {
	t.Helper()
	snap, err := state.Load(snapshotPath(cfg))
	if err != nil {
		return nil, err
	}
	peers, err := snap.Peers(identityOf(t, cfg))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range peers {
		out[p.Prefix.String()] = true
	}
	return out, nil
}

func samePrefixes(got map[string]bool, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !got[w] {
			return false
		}
	}
	return true
}

// An agent restarted while NATS is down puts its peers back from the
// snapshot at once; when NATS returns, the bucket has the last word.
func TestSnapshotRestoresTheMeshWhileNATSIsDown(t *testing.T) {
	s, kv, cfg := meshOf(t, "fd10:2::/48", "fd10:3::/48")
	cfg.StateDir = filepath.Join(t.TempDir(), "state")

	first := start(t, cfg, nil)
	first.waitReady(t)
	testkit.Eventually(t, waitTimeout, "the snapshot of two peers", testkit.True(func() bool {
		got, err := snapshotPrefixes(t, cfg)
		return err == nil && samePrefixes(got, "fd10:2::/48", "fd10:3::/48")
	}))
	st, err := os.Stat(snapshotPath(cfg))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot %s: %v, mode %v; want mode 0600", snapshotPath(cfg), err, st.Mode())
	}
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}
	// Changed in the bucket while the agent is stopped: the snapshot is
	// now stale, which the bucket must correct once it answers.
	if err := kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("fd10:3::/48"))); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()

	second := start(t, cfg, fake.New(wgdev.Config{Name: cfg.WGDevName}))
	testkit.Eventually(t, waitTimeout, "peers restored while NATS is down", testkit.True(func() bool {
		select {
		case <-second.opened:
			return samePrefixes(peerPrefixes(t, second.dev), "fd10:2::/48", "fd10:3::/48")
		default:
			return false
		}
	}))
	// The line is written just after the peers reach the device.
	testkit.Eventually(t, waitTimeout, "the restore logged", testkit.True(func() bool {
		return strings.Contains(second.logs.String(), "restored the mesh from the snapshot")
	}))

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	second.waitReady(t)
	testkit.Eventually(t, waitTimeout, "the stale peer removed", testkit.True(func() bool {
		return samePrefixes(peerPrefixes(t, second.dev), "fd10:2::/48")
	}))
	putPeer(t, openBucket(t, s.URL()), "fd10:4::/48")
	testkit.Eventually(t, waitTimeout, "a later join applied and saved", testkit.True(func() bool {
		got, err := snapshotPrefixes(t, cfg)
		return samePrefixes(peerPrefixes(t, second.dev), "fd10:2::/48", "fd10:4::/48") &&
			err == nil && samePrefixes(got, "fd10:2::/48", "fd10:4::/48")
	}))
}

// Resync passes that change nothing write nothing; a change writes once.
func TestSnapshotWrittenOnlyWhenTheMeshChanges(t *testing.T) {
	_, kv, cfg := meshOf(t, "fd10:2::/48")
	cfg.StateDir = t.TempDir()
	h := start(t, cfg, nil)
	h.waitReady(t)
	testkit.Eventually(t, waitTimeout, "the first snapshot", testkit.True(func() bool {
		got, err := snapshotPrefixes(t, cfg)
		return err == nil && samePrefixes(got, "fd10:2::/48")
	}))
	before, err := os.Stat(snapshotPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	runs := reconcileRuns(t, h)
	testkit.Eventually(t, waitTimeout, "five more resync passes", testkit.True(func() bool { return reconcileRuns(t, h) >= runs+5 }))
	after, err := os.Stat(snapshotPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("snapshot rewritten by resync passes that changed nothing")
	}
	putPeer(t, kv, "fd10:3::/48")
	testkit.Eventually(t, waitTimeout, "the change saved", testkit.True(func() bool {
		got, err := snapshotPrefixes(t, cfg)
		return err == nil && samePrefixes(got, "fd10:2::/48", "fd10:3::/48")
	}))
}

func reconcileRuns(t *testing.T, h *host) int {
	t.Helper()
	body, err := api.NewClient(h.socket).Get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `ikto_reconcile_runs_total{result="ok"} `); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// A snapshot that is not this host's, or cannot be trusted, is logged and
// never applied: the device is not even opened before the claim.
func TestSnapshotIgnoredUnlessItIsOurs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ident func(id *state.Identity)        // whom the snapshot is written for
		file  func(t *testing.T, path string) // what happens to the file after
		why   string
	}{
		{name: "another key", ident: func(id *state.Identity) { id.PublicKey = newPublicKey(t) }, why: "public key"},
		{name: "another device", ident: func(id *state.Identity) { id.Device = "wgother" }, why: "device"},
		{name: "another mesh", ident: func(id *state.Identity) { id.Rules.Mesh = netip.MustParsePrefix("fd20::/16") }, why: "mesh_cidr"},
		{name: "a tampered record", file: func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "fd10:2::/48", "::/0")), 0o600); err != nil {
				t.Fatal(err)
			}
		}, why: "corrupt"},
		{name: "writable by others", file: func(t *testing.T, path string) {
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		}, why: "group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig(t, "nats://127.0.0.1:1", "fd10:1::/48") // no server answers
			cfg.StateDir = t.TempDir()
			id := identityOf(t, cfg)
			if tc.ident != nil {
				tc.ident(&id)
			}
			if err := state.Save(snapshotPath(cfg), state.New(id, []peer.Accepted{accepted(t, "fd10:2::/48")}, time.Now())); err != nil {
				t.Fatal(err)
			}
			if tc.file != nil {
				tc.file(t, snapshotPath(cfg))
			}

			h := start(t, cfg, nil)
			testkit.Eventually(t, waitTimeout, "the snapshot to be refused", testkit.True(func() bool {
				return strings.Contains(h.logs.String(), "not restoring the mesh snapshot")
			}))
			if !strings.Contains(h.logs.String(), tc.why) {
				t.Errorf("log does not say why (%q):\n%s", tc.why, h.logs.String())
			}
			select {
			case <-h.opened:
				t.Fatalf("device opened from a snapshot that is not ours")
			default:
			}
		})
	}
}

func newPublicKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func accepted(t *testing.T, prefix string) peer.Accepted {
	t.Helper()
	r := peer.Record{Name: "remote-" + prefix, PublicKey: newPublicKey(t).String(), AdvertiseAddress: "198.18.0.20", AllowedIP: prefix, WGPort: 51820}
	acc, rej := peer.Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48}.Check(peer.Key(netip.MustParsePrefix(prefix)), r.Encode(), 1)
	if rej != nil {
		t.Fatal(rej)
	}
	return acc
}

// A host restored from its snapshot whose claim then fails for good (the
// prefix is another key's, or its key was revoked) takes the restored peers
// off again and forgets the snapshot: nothing of that mesh stays configured.
func TestRestoredPeersRemovedWhenTheClaimFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, kv jetstream.KeyValue, cfg *config.Config)
		want error
	}{
		{"prefix held by another key", func(t *testing.T, kv jetstream.KeyValue, cfg *config.Config) {
			putPeer(t, kv, settings(t, cfg).Prefix.String())
		}, bucket.ErrAddressInUse},
		{"key revoked", func(t *testing.T, kv jetstream.KeyValue, cfg *config.Config) {
			if _, err := kv.Put(context.Background(), peer.RevokedKey(identityOf(t, cfg).PublicKey), []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}, ErrEvicted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, kv, cfg := meshOf(t)
			cfg.StateDir = t.TempDir()
			snap := state.New(identityOf(t, cfg), []peer.Accepted{accepted(t, "fd10:2::/48"), accepted(t, "fd10:3::/48")}, time.Now())
			if err := state.Save(snapshotPath(cfg), snap); err != nil {
				t.Fatal(err)
			}
			tc.lose(t, kv, cfg)

			h := start(t, cfg, nil)
			if err := h.waitExit(t); !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
			logs := h.logs.String()
			if !strings.Contains(logs, "restored the mesh from the snapshot") || !strings.Contains(logs, "removed the peers restored from the snapshot") {
				t.Fatalf("the peers were not restored and then removed:\n%s", logs)
			}
			if got := peerPrefixes(t, h.dev); len(got) != 0 {
				t.Errorf("device keeps %v after the lost claim", got)
			}
			if _, err := os.Stat(snapshotPath(cfg)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("snapshot after the lost claim: %v, want it removed", err)
			}
		})
	}
}

// An evicted host forgets its snapshot, so that restarting it by hand does
// not bring back a mesh it no longer belongs to.
func TestEvictionRemovesTheSnapshot(t *testing.T) {
	_, kv, cfg := meshOf(t, "fd10:2::/48")
	cfg.StateDir = t.TempDir()
	h := start(t, cfg, nil)
	h.waitReady(t)
	testkit.Eventually(t, waitTimeout, "the snapshot", testkit.True(func() bool { _, err := snapshotPrefixes(t, cfg); return err == nil }))
	if err := kv.Delete(context.Background(), peer.Key(settings(t, cfg).Prefix)); err != nil {
		t.Fatal(err)
	}
	if err := h.waitExit(t); !errors.Is(err, ErrEvicted) {
		t.Fatalf("Run = %v, want ErrEvicted", err)
	}
	if _, err := os.Stat(snapshotPath(cfg)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("snapshot after eviction: %v, want it removed", err)
	}
}

// nats_kv_replicas > 1 against a single server is a configuration error the
// agent reports and exits on, instead of retrying for ever.
func TestAgentExitsWhenReplicasNeedACluster(t *testing.T) {
	s := natstest.Start(t)
	cfg := newConfig(t, s.URL(), "fd10:1::/48")
	cfg.NATSKVReplicas = 3
	h := start(t, cfg, nil)
	err := h.waitExit(t)
	if !errors.Is(err, bucket.ErrReplicasNotSupported) || !strings.Contains(err.Error(), "nats_kv_replicas") {
		t.Fatalf("Run = %v, want ErrReplicasNotSupported naming nats_kv_replicas", err)
	}
}
