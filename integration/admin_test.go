package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// adminTimeout bounds one ikto-admin run.
const adminTimeout = 30 * time.Second

// resyncPeriod is the agents' resync interval in the harness config.
const resyncPeriod = 2 * time.Second

// offlineTimeout bounds the wait for a killed agent to show as offline: its
// last heartbeat may be up to 10 s old when it dies, and list calls a host
// online while its heartbeat is younger than 30 s.
const offlineTimeout = 75 * time.Second

// adminRow is the part of a `list -o json` row these tests check.
type adminRow struct {
	Name             string  `json:"name"`
	PublicKey        string  `json:"public_key"`
	AdvertiseAddress string  `json:"advertise_address"`
	AllowedIP        string  `json:"allowed_ip"`
	WGPort           int     `json:"wg_port"`
	Key              string  `json:"key"`
	Revision         uint64  `json:"revision"`
	State            string  `json:"state"`
	Reason           string  `json:"reason"`
	LastSeen         *string `json:"last_seen"`
	Online           bool    `json:"online"`
}

// runAdmin runs ikto-admin from the root namespace (where the NATS server
// listens on the bridge) and returns its exit code and output.
func runAdmin(t *testing.T, bins *harness.Binaries, args ...string) (int, string, string) {
	t.Helper()
	bin, err := bins.Path(harness.AdminBinary)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ikto-admin %q: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// listRows runs `list -o json` and decodes it, by host name.
func listRows(t *testing.T, bins *harness.Binaries, cfgPath string) map[string]adminRow {
	t.Helper()
	rows, err := tryListRows(t, bins, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func tryListRows(t *testing.T, bins *harness.Binaries, cfgPath string) (map[string]adminRow, error) {
	t.Helper()
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "-o", "json", "list")
	if code != 0 {
		return nil, fmt.Errorf("ikto-admin list exited %d: %s", code, stderr)
	}
	var rows []adminRow
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		return nil, fmt.Errorf("ikto-admin list -o json: %w\n%s", err, stdout)
	}
	byName := map[string]adminRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	if len(byName) != len(rows) {
		return nil, fmt.Errorf("ikto-admin list -o json has duplicate names:\n%s", stdout)
	}
	return byName, nil
}

// startAdminMesh starts a mesh of hosts by name and the ikto-admin binary,
// with the config an operator runs it with: alpha's, since a host's config
// names the server, the bucket and the mesh the records are judged by.
func startAdminMesh(t *testing.T, names ...string) (m *mesh, bins *harness.Binaries, hosts []*harness.Host, cfgPath string) {
	t.Helper()
	m = newMesh(t)
	bins = harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	hosts = m.startAll(names...)
	return m, bins, hosts, m.agents["alpha"].ConfigPath
}

func TestAdminListAndEvict(t *testing.T) {
	m, bins, hosts, cfgPath := startAdminMesh(t, "alpha", "bravo", "charlie", "delta")

	rows := listRows(t, bins, cfgPath)
	if len(rows) != len(hosts) {
		t.Errorf("list shows %d rows, want %d: %+v", len(rows), len(hosts), rows)
	}
	for _, h := range hosts {
		r := rows[h.Name]
		want := adminRow{
			Name: h.Name, PublicKey: h.PublicKey.String(), AdvertiseAddress: h.Addr.String(),
			AllowedIP: h.Prefix().String(), WGPort: 51820, Key: peer.Key(h.Prefix()), State: "valid",
			Revision: r.Revision, LastSeen: r.LastSeen, Online: r.Online,
		}
		if r != want || r.Revision == 0 {
			t.Errorf("list row of %s = %+v, want %+v", h.Name, r, want)
		}
	}

	// Every agent writes a heartbeat at start and every 10 s.
	testkit.Eventually(t, convergeTimeout, "every host online in list", func() error {
		rows, err := tryListRows(t, bins, cfgPath)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if r := rows[h.Name]; !r.Online || r.LastSeen == nil {
				return fmt.Errorf("%s: online %v, last_seen %v", h.Name, r.Online, r.LastSeen)
			}
		}
		return nil
	})

	// Evict delta by an address inside its prefix.
	alpha, delta := hosts[0], hosts[3]
	target := delta.PrivateAddress.Next().String()
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "evict", target, "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would evict delta") {
		t.Fatalf("evict --dry-run exited %d:\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = runAdmin(t, bins, "-c", cfgPath, "evict", target); code != 0 {
		t.Fatalf("evict %s exited %d:\n%s%s", target, code, stdout, stderr)
	}
	t.Logf("evict: %s", stdout)
	if code := waitExit(t, m.agents[delta.Name]); code != 4 {
		t.Errorf("evicted agent exited %d, want 4\n%s", code, m.agents[delta.Name].LogTail(20))
	}
	m.waitConverged(hosts[:3])
	ctx := context.Background()
	if _, err := m.bucket.Get(ctx, peer.RevokedKey(delta.PublicKey)); err != nil {
		t.Errorf("revocation of delta's key: %v", err)
	}

	// Started again with the same key, delta refuses to run.
	a := m.start(delta)
	if code := waitExit(t, a); code != 4 {
		t.Errorf("agent restarted with a revoked key exited %d, want 4\n%s", code, a.LogTail(20))
	}
	if logs := a.Logs(); !strings.Contains(logs, "ikto-init") {
		t.Errorf("the refusal does not say how to rejoin (ikto-init):\n%s", a.LogTail(10))
	}
	// Whatever the restart left in the bucket, the others never take delta back.
	m.waitConverged(hosts[:3])
	if err := harness.CheckDevice(alpha, hosts[:3]); err != nil {
		t.Error(err)
	}
	rows = listRows(t, bins, cfgPath)
	if r := rows["delta"]; r.State != "revoked" || r.PublicKey != delta.PublicKey.String() {
		t.Errorf("delta in list after evict = %+v, want state revoked", r)
	}
	for _, h := range hosts[:3] {
		if rows[h.Name].State != "valid" {
			t.Errorf("%s in list after evict = %+v, want valid", h.Name, rows[h.Name])
		}
	}

	// status reads one agent over its socket; -o json is the api.Status object.
	code, stdout, stderr = runAdmin(t, bins, "status", "-s", alpha.SocketPath, "-o", "json")
	var st harness.Status
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Errorf("status -o json exited %d (%v):\n%s%s", code, err, stdout, stderr)
	} else if st.Self.Name != "alpha" || len(st.Peers) != 2 || !st.NATS.Connected {
		t.Errorf("status of alpha: self %q, %d peers, nats connected %v; want alpha, 2, true", st.Self.Name, len(st.Peers), st.NATS.Connected)
	}
	if code, stdout, _ = runAdmin(t, bins, "status", "-s", alpha.SocketPath); code != 0 || !strings.Contains(stdout, "HANDSHAKE") || !strings.Contains(stdout, "charlie") {
		t.Errorf("status table exited %d:\n%s", code, stdout)
	}

	// An address nobody holds: exit 1 naming it; a non-address: exit 2.
	free := freeAddress(t, m, hosts)
	code, _, stderr = runAdmin(t, bins, "-c", cfgPath, "evict", free.String())
	if code != 1 || !strings.Contains(stderr, "no host holds "+free.String()) {
		t.Errorf("evict of %s (free) exited %d: %s", free, code, stderr)
	}
	if code, _, stderr = runAdmin(t, bins, "-c", cfgPath, "evict", "not-an-address"); code != 2 {
		t.Errorf("evict not-an-address exited %d, want 2: %s", code, stderr)
	}
}

// freeAddress is an address inside the mesh that no host's prefix holds.
func freeAddress(t *testing.T, m *mesh, hosts []*harness.Host) netip.Addr {
	t.Helper()
	a := m.net.Mesh.Addr()
	for range 1 << 16 {
		a = a.Next()
		held := false
		for _, h := range hosts {
			held = held || h.Prefix().Contains(a)
		}
		if !held && m.net.Mesh.Contains(a) {
			return a
		}
		// Jump to the next /48: addresses inside one prefix share its fate.
		b := a.As16()
		b[5]++
		if b[5] == 0 {
			b[4]++
		}
		for i := 6; i < 16; i++ {
			b[i] = 0
		}
		a = netip.AddrFrom16(b)
	}
	t.Fatal("no free /48 in the mesh")
	return netip.Addr{}
}

// evictHost evicts h by its private address with ikto-admin and waits for its
// agent to exit 4 and the rest of the mesh to converge without it.
func evictHost(t *testing.T, m *mesh, bins *harness.Binaries, cfgPath string, h *harness.Host, rest []*harness.Host) {
	t.Helper()
	target := h.PrivateAddress.String()
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "evict", target)
	if code != 0 {
		t.Fatalf("evict %s exited %d:\n%s%s", target, code, stdout, stderr)
	}
	if code := waitExit(t, m.agents[h.Name]); code != 4 {
		t.Fatalf("evicted agent exited %d, want 4\n%s", code, m.agents[h.Name].LogTail(20))
	}
	m.waitConverged(rest)
}

// rejectedMetric reads ikto_records_rejected{reason="..."} from the agent's
// /metrics over its socket.
func rejectedMetric(ctx context.Context, socket string, reason peer.Reason) (float64, error) {
	body, err := harness.SocketGet(ctx, socket, "/metrics")
	if err != nil {
		return 0, err
	}
	prefix := fmt.Sprintf("ikto_records_rejected{reason=%q} ", string(reason))
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no line %q in /metrics", socket, strings.TrimSpace(prefix))
}

func TestAdminEvictedHostRejoinsWithFreshIdentity(t *testing.T) {
	m, bins, hosts, cfgPath := startAdminMesh(t, "alpha", "bravo", "charlie")
	charlie := hosts[2]
	oldKey, oldPrefix := charlie.PublicKey, charlie.Prefix()

	evictHost(t, m, bins, cfgPath, charlie, hosts[:2])

	// A fresh identity in the same namespace: a new key file and a new
	// prefix, what ikto-init would hand out.
	keyPath := filepath.Join(charlie.Dir, "private-2.key")
	key, err := config.CreatePrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	free := netip.PrefixFrom(freeAddress(t, m, hosts), config.DefaultSubnetPrefix).Masked()
	charlie.KeyPath = keyPath
	charlie.PublicKey = key.PublicKey()
	charlie.PrivateAddress = free.Addr()
	if charlie.PublicKey == oldKey || charlie.Prefix() == oldPrefix {
		t.Fatalf("fresh identity is not fresh: key %s, prefix %s", charlie.PublicKey, charlie.Prefix())
	}
	t.Logf("charlie rejoins as %s with %s (was %s with %s)", charlie.PublicKey, charlie.Prefix(), oldKey, oldPrefix)

	m.start(charlie)
	m.waitConverged(hosts)
	m.pingAll(hosts)

	// list shows both of charlie's identities: the new one valid, the old
	// one revoked (so rows are looked up by public key, not by name).
	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "-o", "json", "list")
	var rows []adminRow
	if err := json.Unmarshal([]byte(stdout), &rows); code != 0 || err != nil {
		t.Fatalf("list -o json exited %d (%v):\n%s%s", code, err, stdout, stderr)
	}
	byKey := map[string]adminRow{}
	for _, r := range rows {
		byKey[r.PublicKey] = r
	}
	if r := byKey[charlie.PublicKey.String()]; r.Name != "charlie" || r.State != "valid" || r.AllowedIP != charlie.Prefix().String() {
		t.Errorf("charlie's new identity in list = %+v, want valid with prefix %s", r, charlie.Prefix())
	}
	if r := byKey[oldKey.String()]; r.State != "revoked" {
		t.Errorf("charlie's old identity in list = %+v, want revoked", r)
	}
	// The old key stays revoked.
	if _, err := m.bucket.Get(context.Background(), peer.RevokedKey(oldKey)); err != nil {
		t.Errorf("revocation of charlie's old key: %v", err)
	}
}

func TestAdminRevokedKeyRecordRejectedEverywhere(t *testing.T) {
	m, bins, hosts, cfgPath := startAdminMesh(t, "alpha", "bravo", "charlie")
	charlie, rest := hosts[2], hosts[:2]
	ctx := context.Background()
	old, err := m.bucket.Record(ctx, charlie.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	if old.PublicKey != charlie.PublicKey.String() {
		t.Fatalf("charlie's record has key %s, want %s", old.PublicKey, charlie.PublicKey)
	}

	evictHost(t, m, bins, cfgPath, charlie, rest)

	// Put the revoked record back by hand.
	if _, err := m.bucket.Put(ctx, peer.Key(charlie.Prefix()), old.Encode()); err != nil {
		t.Fatal(err)
	}
	revoked := charlie.PublicKey.String()

	check := func(ctx context.Context, wantMetric bool) error {
		if err := m.exitedEarly(rest); err != nil {
			return err
		}
		for _, h := range rest {
			view, err := h.DeviceView()
			if err != nil {
				return testkit.Permanent(err)
			}
			if v, ok := view[revoked]; ok {
				return testkit.Permanent(fmt.Errorf("%s lists the revoked key %s: %+v", h.Name, revoked, v))
			}
			if err := harness.CheckDevice(h, rest); err != nil {
				return testkit.Permanent(err)
			}
			if wantMetric {
				v, err := rejectedMetric(ctx, h.SocketPath, peer.ReasonRevoked)
				if err != nil {
					return err
				}
				if v != 1 {
					return fmt.Errorf("%s: ikto_records_rejected{reason=\"revoked\"} = %v, want 1", h.Name, v)
				}
			}
		}
		return nil
	}

	// The agents see the record through the watch at once; the metric
	// follows their next resolve.
	testkit.EventuallyContext(t, convergeTimeout, "both agents to count the revoked record", func(ctx context.Context) error {
		return check(ctx, true)
	})

	// Then it must stay that way across several resyncs: any lapse ends the
	// wait at once (Permanent), the wait itself ends after the window.
	window := 3 * resyncPeriod
	deadline := time.Now().Add(window)
	testkit.EventuallyContext(t, window+convergeTimeout, "the revoked record to stay rejected for "+window.String(), func(ctx context.Context) error {
		if err := check(ctx, true); err != nil {
			return testkit.Permanent(err)
		}
		if time.Now().Before(deadline) {
			return errors.New("still observing")
		}
		return nil
	})

	rows := listRows(t, bins, cfgPath)
	if r := rows["charlie"]; r.State != "revoked" || r.PublicKey != revoked {
		t.Errorf("charlie in list with its record back = %+v, want state revoked", r)
	}
}

func TestAdminPruneKilledAgent(t *testing.T) {
	m, bins, hosts, cfgPath := startAdminMesh(t, "alpha", "bravo", "charlie")
	charlie, rest := hosts[2], hosts[:2]
	ctx := context.Background()

	testkit.Eventually(t, convergeTimeout, "every host online in list", func() error {
		rows, err := tryListRows(t, bins, cfgPath)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if r := rows[h.Name]; !r.Online {
				return fmt.Errorf("%s not online: %+v", h.Name, r)
			}
		}
		return nil
	})

	a := m.agents[charlie.Name]
	killed := time.Now()
	if err := a.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, a); code != -1 {
		t.Errorf("SIGKILLed agent exited %d, want -1 (signal)", code)
	}

	testkit.Eventually(t, offlineTimeout, "charlie offline in list", func() error {
		if err := m.exitedEarly(rest); err != nil {
			return err
		}
		rows, err := tryListRows(t, bins, cfgPath)
		if err != nil {
			return err
		}
		if r, ok := rows["charlie"]; !ok || r.Online {
			return fmt.Errorf("charlie: %+v (present %v)", r, ok)
		}
		for _, h := range rest {
			if r := rows[h.Name]; !r.Online {
				return testkit.Permanent(fmt.Errorf("live host %s is offline in list: %+v", h.Name, r))
			}
		}
		return nil
	})
	t.Logf("charlie offline in list %s after SIGKILL", time.Since(killed).Round(time.Second))

	code, stdout, stderr := runAdmin(t, bins, "-c", cfgPath, "prune", "--offline-for", "20s")
	t.Logf("prune: %s", stdout)
	if code != 0 {
		t.Fatalf("prune exited %d:\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "evicting charlie") || !strings.Contains(stdout, "evicted 1 hosts") {
		t.Errorf("prune output does not evict just charlie:\n%s", stdout)
	}
	for _, h := range rest {
		if strings.Contains(stdout, "evicting "+h.Name) {
			t.Errorf("prune evicted live host %s:\n%s", h.Name, stdout)
		}
	}

	if err := m.bucket.Absent(ctx, peer.Key(charlie.Prefix())); err != nil {
		t.Errorf("charlie's record after prune: %v, want key not found", err)
	}
	if _, err := m.bucket.Get(ctx, peer.RevokedKey(charlie.PublicKey)); err != nil {
		t.Errorf("revocation of charlie's key: %v", err)
	}
	m.waitConverged(rest)

	for _, h := range rest {
		if err := m.bucket.Absent(ctx, peer.RevokedKey(h.PublicKey)); err != nil {
			t.Errorf("live host %s revoked? %v", h.Name, err)
		}
		if _, err := m.bucket.Record(ctx, h.Prefix()); err != nil {
			t.Errorf("live host %s record: %v", h.Name, err)
		}
	}
	rows := listRows(t, bins, cfgPath)
	for _, h := range rest {
		if r := rows[h.Name]; r.State != "valid" || !r.Online {
			t.Errorf("%s in list after prune = %+v, want valid and online", h.Name, r)
		}
	}
	m.pingAll(rest)
}
