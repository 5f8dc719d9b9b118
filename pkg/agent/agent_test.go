package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// host is one in-process agent on a fake device.
type host struct {
	cfg    *config.Config
	dev    *fake.Device
	opened chan struct{}
	ready  chan struct{}
	done   chan error
	cancel context.CancelFunc
	logs   *logbuf.Buffer
	socket string
}

func newConfig(t *testing.T, url, prefix string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	if _, err := config.CreatePrivateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(prefix)
	cfg := &config.Config{
		Name: "host-" + p.Addr().String(), AdvertiseAddress: "198.18.0.10", PrivateAddress: p.Addr().String(),
		SubnetPrefix: 48, MeshCIDR: "fd10::/16", WGDevName: "wgtest", WGPort: 51820,
		PrivateKeyPath: keyPath, NATSURL: url, NATSKV: "ikto-test", ResyncInterval: "100ms",
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start runs an agent for cfg until the test ends.
func start(t *testing.T, cfg *config.Config, dev *fake.Device) *host {
	t.Helper()
	return startWith(t, cfg, dev, nil)
}

// startWith is start with opts changing the agent's Options.
func startWith(t *testing.T, cfg *config.Config, dev *fake.Device, opts func(*Options)) *host {
	t.Helper()
	h := &host{cfg: cfg, opened: make(chan struct{}), ready: make(chan struct{}), done: make(chan error, 1), logs: &logbuf.Buffer{},
		socket: filepath.Join(t.TempDir(), "ikto.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	var once sync.Once
	opt := Options{
		Socket: h.socket,
		Log:    slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OpenDevice: func(c wgdev.Config) (wgdev.Device, error) {
			if dev == nil {
				dev = fake.New(c)
			}
			h.dev = dev
			close(h.opened)
			// The agent closes its device on exit; tests inspect it after.
			return keepOpen{dev}, nil
		},
		Ready: func() { once.Do(func() { close(h.ready) }) },
	}
	if opts != nil {
		opts(&opt)
	}
	go func() { h.done <- Run(ctx, settings(t, cfg), opt) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop within 10s of cancel")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *host) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-h.ready:
	case err := <-h.done:
		t.Fatalf("agent exited before ready: %v\n%s", err, h.logs.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("agent not ready within 15s\n%s", h.logs.String())
	}
}

func (h *host) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // keep it for Cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("agent did not exit within 15s\n%s", h.logs.String())
		return nil
	}
}

// waitTimeout bounds each wait on an agent: a pass, a watch event or a
// reconnect, with room for a loaded machine.
const waitTimeout = 15 * time.Second

func peerPrefixes(t *testing.T, d wgdev.Device) map[string]bool {
	t.Helper()
	peers, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, p := range peers {
		for _, n := range p.AllowedIPs {
			out[n.String()] = true
		}
	}
	return out
}

func putPeer(t *testing.T, kv jetstream.KeyValue, prefix string) wgtypes.Key {
	t.Helper()
	k, _ := wgtypes.GeneratePrivateKey()
	r := peer.Record{Name: "remote-" + prefix, PublicKey: k.PublicKey().String(), AdvertiseAddress: "198.18.0.20", AllowedIP: prefix, WGPort: 51820}
	if _, err := kv.Put(context.Background(), peer.Key(netip.MustParsePrefix(prefix)), r.Encode()); err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// meshOf starts a NATS server whose bucket holds a record at each of peers,
// and returns it, the bucket and the config of a host at fd10:1::/48 that
// joins it: what most of these tests start from.
func meshOf(t *testing.T, peers ...string) (*natsserver.Server, jetstream.KeyValue, *config.Config) {
	t.Helper()
	s := natstest.Start(t)
	kv := openBucket(t, s.URL())
	for _, p := range peers {
		putPeer(t, kv, p)
	}
	return s, kv, newConfig(t, s.URL(), "fd10:1::/48")
}

func openBucket(t *testing.T, url string) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, url)
	kv, err := bucket.OpenBucket(context.Background(), js, "ikto-test", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestAgentJoinsAndFollowsTheBucket(t *testing.T) {
	s := natstest.Start(t)
	kv := openBucket(t, s.URL())
	putPeer(t, kv, "fd10:2::/48")
	putPeer(t, kv, "fd10:3::/48")
	kv.Put(context.Background(), peer.Key(netip.MustParsePrefix("fd10:4::/48")), []byte("garbage"))

	h := start(t, newConfig(t, s.URL(), "fd10:1::/48"), nil)
	h.waitReady(t)
	if got := peerPrefixes(t, h.dev); len(got) != 2 || !got["fd10:2::/48"] || !got["fd10:3::/48"] {
		t.Fatalf("device peers = %v, want fd10:2::/48 and fd10:3::/48", got)
	}
	e, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48")))
	if err != nil || !strings.Contains(string(e.Value()), h.cfg.Name) {
		t.Fatalf("own record = %v, %v; want it claimed", e, err)
	}
	putPeer(t, kv, "fd10:5::/48")
	testkit.Eventually(t, waitTimeout, "new peer on device", testkit.True(func() bool { return peerPrefixes(t, h.dev)["fd10:5::/48"] }))
	kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("fd10:2::/48")))
	testkit.Eventually(t, waitTimeout, "deleted peer gone", testkit.True(func() bool { return !peerPrefixes(t, h.dev)["fd10:2::/48"] }))

	st, err := api.NewClient(h.socket).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Synced || st.Backend != wgdev.KindFake || st.Self.Name != h.cfg.Name || len(st.Peers) != 2 || !st.NATS.Connected {
		t.Fatalf("status = %+v, want synced, fake backend, self, 2 peers, connected", st)
	}
	if len(st.Rejected) != 1 || st.Rejected[0].Reason != string(peer.ReasonMalformed) {
		t.Fatalf("status rejected = %+v, want one malformed record", st.Rejected)
	}
	body, err := api.NewClient(h.socket).Get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ikto_records_rejected{reason="malformed"} 1`,
		`ikto_record_rejections_total{reason="malformed"} 1`,
		`ikto_records_rejected{reason="outside_mesh"} 0`,
		"ikto_peers_configured 2", "ikto_peers_desired 2", "ikto_nats_connected 1",
		"ikto_watch_snapshots_total 1", `ikto_peer_changes_total{op="remove"} 1`,
		"ikto_reconcile_duration_seconds_count",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The heartbeat goes to the live bucket, never the peers bucket. The
	// agent creates that bucket with its first beat, which runs beside the
	// loop: it may not exist yet.
	_, js := natstest.Connect(t, s.URL())
	testkit.Eventually(t, waitTimeout, "heartbeat", testkit.True(func() bool {
		live, err := bucket.OpenLiveBucket(context.Background(), js, "ikto-test", false, 0)
		if err != nil {
			return false
		}
		hbs, err := bucket.Heartbeats(context.Background(), live)
		hb, ok := hbs[netip.MustParsePrefix("fd10:1::/48")]
		return err == nil && ok && hb.Name == h.cfg.Name && time.Since(hb.At) < time.Minute
	}))
	if !strings.Contains(h.logs.String(), "reason=malformed") {
		t.Fatalf("rejection not logged:\n%s", h.logs.String())
	}
}

func TestAgentExitsInUseNamingTheHolder(t *testing.T) {
	s := natstest.Start(t)
	first := start(t, newConfig(t, s.URL(), "fd10:1::/48"), nil)
	first.waitReady(t)
	second := start(t, newConfig(t, s.URL(), "fd10:1::/48"), fake.New(wgdev.Config{Name: "wgtest2"}))
	err := second.waitExit(t)
	if !errors.Is(err, bucket.ErrAddressInUse) || !strings.Contains(err.Error(), "fd10:1::/48") || !strings.Contains(err.Error(), first.cfg.Name) {
		t.Fatalf("second agent: %v; want address in use naming the prefix and %q", err, first.cfg.Name)
	}
	select {
	case <-second.opened:
		t.Fatal("the loser opened its device")
	default:
	}
}

func TestAgentEvictedWhenItsRecordIsDeleted(t *testing.T) {
	_, kv, cfg := meshOf(t, "fd10:2::/48")
	h := start(t, cfg, nil)
	h.waitReady(t)
	if err := kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48"))); err != nil {
		t.Fatal(err)
	}
	if err := h.waitExit(t); !errors.Is(err, ErrEvicted) {
		t.Fatalf("Run = %v, want ErrEvicted", err)
	}
	if got := peerPrefixes(t, h.dev); len(got) != 0 {
		t.Fatalf("evicted host still has peers %v", got)
	}
}

func TestAgentEvictedWhenItsKeyIsRevoked(t *testing.T) {
	_, kv, cfg := meshOf(t)
	h := start(t, cfg, nil)
	h.waitReady(t)
	k, _ := config.LoadPrivateKey(h.cfg.PrivateKeyPath)
	if _, err := kv.Put(context.Background(), peer.RevokedKey(k.PublicKey()), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.waitExit(t); !errors.Is(err, ErrEvicted) {
		t.Fatalf("Run = %v, want ErrEvicted", err)
	}
	// Restarted with the revoked key, it refuses before claiming again.
	if err := kv.Delete(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48"))); err != nil {
		t.Fatal(err)
	}
	again := start(t, h.cfg, fake.New(wgdev.Config{Name: "wgtest"}))
	if err := again.waitExit(t); !errors.Is(err, ErrEvicted) {
		t.Fatalf("restart with a revoked key: Run = %v, want ErrEvicted", err)
	}
	if _, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix("fd10:1::/48"))); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("revoked agent put its record back: %v", err)
	}
}

// A restarted agent must not drop peers it has not heard about yet, and
// must leave the device's peers alone while NATS is down.
func TestAgentLeavesDeviceAloneUntilSnapshotAndWhileNATSIsDown(t *testing.T) {
	s, kv, cfg := meshOf(t)
	h := start(t, cfg, nil)
	h.waitReady(t)
	putPeer(t, kv, "fd10:2::/48")
	testkit.Eventually(t, waitTimeout, "peer configured", testkit.True(func() bool { return peerPrefixes(t, h.dev)["fd10:2::/48"] }))
	// Its first contact (this fake device reports no handshake) ends at
	// its bound, 3 s; contacts under way may finish while NATS is down,
	// and this test is about passes.
	calls := h.dev.Calls()
	for settled, end := time.Now(), time.Now().Add(waitTimeout); time.Since(settled) < 4*time.Second; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the device is still called %s after the peer came", waitTimeout)
		}
		if n := h.dev.Calls(); n != calls {
			calls, settled = n, time.Now()
		}
	}

	s.Shutdown()
	// Ten resync periods with NATS down: no device call at all.
	deadline := time.Now().Add(time.Second)
	testkit.Eventually(t, waitTimeout, "ten resync periods with NATS down", func() error {
		if h.dev.Calls() != calls || !peerPrefixes(t, h.dev)["fd10:2::/48"] {
			t.Fatalf("device touched while NATS was down: calls %d→%d", calls, h.dev.Calls())
		}
		if time.Now().Before(deadline) {
			return errors.New("still watching")
		}
		return nil
	})

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	kv2 := openBucket(t, s.URL())
	putPeer(t, kv2, "fd10:3::/48")
	testkit.Eventually(t, waitTimeout, "change after NATS returned", testkit.True(func() bool { return peerPrefixes(t, h.dev)["fd10:3::/48"] }))
	if !peerPrefixes(t, h.dev)["fd10:2::/48"] {
		t.Fatal("peer lost across the outage")
	}
}

func TestAgentStartsBeforeNATS(t *testing.T) {
	s := natstest.New(t, natsserver.Options{})
	h := start(t, newConfig(t, s.URL(), "fd10:1::/48"), nil)
	testkit.Eventually(t, waitTimeout, "agent to say it is waiting", testkit.True(func() bool { return strings.Contains(h.logs.String(), "no NATS server answers yet") }))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
}

// keepOpen ignores Close so a test can read the device after the agent ends.
type keepOpen struct{ *fake.Device }

func (keepOpen) Close() error { return nil }

// settings is cfg resolved, for a config the test knows to be valid.
func settings(t *testing.T, cfg *config.Config) *config.Settings {
	t.Helper()
	s, err := cfg.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
