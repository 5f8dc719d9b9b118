package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// resyncPeriod is the agents' resync interval in the harness config.
const resyncPeriod = 2 * time.Second

// offlineTimeout bounds the wait for a killed agent to show as offline: its
// last heartbeat may be up to 10 s old when it dies, and list calls a host
// online while its heartbeat is younger than 30 s.
const offlineTimeout = 75 * time.Second

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
