package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// put030 writes a record the way an ikto 0.3.0 agent does: the five
// fields, and never a heartbeat.
func put030(t *testing.T, kv jetstream.KeyValue, name, prefix string, seed byte) {
	t.Helper()
	value := `{"name":"` + name + `","public_key":"` + testKey(t, seed).String() + `","advertise_address":"198.18.0.30","allowed_ip":"` + prefix + `","wg_port":51820}`
	if _, err := kv.Put(context.Background(), peer.Key(netip.MustParsePrefix(prefix)), []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func recordExists(t *testing.T, kv jetstream.KeyValue, prefix string) bool {
	t.Helper()
	_, err := kv.Get(context.Background(), peer.Key(netip.MustParsePrefix(prefix)))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestPrune(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	live := openLiveBucket(t, js)
	ctx := context.Background()
	wall := time.Now()
	fresh := record(t, "fresh", "fd10:1::/48", 1, "198.18.0.2", 51820)
	stale := record(t, "stale", "fd10:2::/48", 2, "198.18.0.3", 51820)
	silent := record(t, "silent", "fd10:3::/48", 3, "198.18.0.4", 51820) // new record, no heartbeat yet
	for _, r := range []peer.Record{fresh, stale, silent} {
		put(t, kv, r)
	}
	heartbeat(t, live, fresh, wall.Add(-time.Minute))
	heartbeat(t, live, stale, wall.Add(-2*time.Hour))

	clock := func() time.Time { return wall }
	code, stdout, stderr := execAt(t, clock, "prune", "--offline-for", "1h", "--dry-run", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "would evict stale fd10:2::/48") || strings.Contains(stdout, "fresh") || strings.Contains(stdout, "silent") {
		t.Errorf("prune --dry-run: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = execAt(t, clock, "prune", "--offline-for", "1h", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicting stale") || !strings.Contains(stdout, "last seen 2h ago") {
		t.Errorf("prune: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := kv.Get(ctx, peer.Key(netip.MustParsePrefix(stale.AllowedIP))); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("stale record after prune: %v, want deleted", err)
	}
	if revs, _ := bucket.Revocations(ctx, kv); len(revs) != 1 || revs[testKey(t, 2)].Name != "stale" {
		t.Errorf("revocations after prune = %v, want stale's key", revs)
	}
	for _, r := range []peer.Record{fresh, silent} {
		if _, err := kv.Get(ctx, peer.Key(netip.MustParsePrefix(r.AllowedIP))); err != nil {
			t.Errorf("%s after prune: %v, want kept", r.Name, err)
		}
	}
	// Two hours on, the record that never sent a heartbeat is old enough
	// too, but only --include-silent evicts a host without heartbeats.
	later := func() time.Time { return wall.Add(2 * time.Hour) }
	code, stdout, _ = execAt(t, later, "prune", "--offline-for", "1h", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "kept silent") || strings.Contains(stdout, "evicting silent") {
		t.Errorf("later prune: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = execAt(t, later, "prune", "--offline-for", "1h", "--include-silent", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "evicting silent") || !strings.Contains(stdout, "no heartbeat") {
		t.Errorf("later prune --include-silent: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = execAt(t, clock, "prune", "--offline-for", "1h", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "no host has been silent for longer than 1h0m0s") {
		t.Errorf("prune with nothing to do: exit %d\n%s", code, stdout)
	}
}

// A 0.3.0 agent sharing the bucket sends no heartbeat: prune must not take
// it for dead, whether or not newer agents have made a heartbeat bucket.
func TestPruneLeavesHostsWithoutHeartbeats(t *testing.T) {
	for _, withLive := range []bool{false, true} {
		t.Run(map[bool]string{false: "no heartbeat bucket", true: "beside newer agents"}[withLive], func(t *testing.T) {
			url, js := startNATS(t)
			kv := openBucket(t, js)
			put030(t, kv, "old-agent", "fd10:30::/48", 30)
			stale := record(t, "stale", "fd10:2::/48", 2, "198.18.0.3", 51820)
			put(t, kv, stale)
			if withLive {
				live := openLiveBucket(t, js)
				heartbeat(t, live, stale, time.Now())
			}
			// Two days on: the 0.3.0 record is old, stale's heartbeat too.
			later := func() time.Time { return time.Now().Add(48 * time.Hour) }
			code, stdout, stderr := execAt(t, later, "prune", "--offline-for", "1h", "--nats-url", url)
			if code != 0 || !strings.Contains(stdout, "kept old-agent fd10:30::/48") {
				t.Errorf("prune: exit %d\n%s%s", code, stdout, stderr)
			}
			if !recordExists(t, kv, "fd10:30::/48") {
				t.Error("prune evicted the 0.3.0 agent's record")
			}
			if revs, _ := bucket.Revocations(context.Background(), kv); revs[testKey(t, 30)].PublicKey != "" {
				t.Error("prune revoked the 0.3.0 agent's key")
			}
			if withLive == recordExists(t, kv, "fd10:2::/48") {
				t.Errorf("stale host with a 2-day-old heartbeat: record kept %v, want evicted %v", !withLive, withLive)
			}

			code, stdout, stderr = execAt(t, later, "prune", "--offline-for", "1h", "--include-silent", "--nats-url", url)
			if code != 0 || !strings.Contains(stdout, "evicting old-agent") || recordExists(t, kv, "fd10:30::/48") {
				t.Errorf("prune --include-silent: exit %d, record left %v\n%s%s", code, recordExists(t, kv, "fd10:30::/48"), stdout, stderr)
			}
		})
	}
}

func TestPruneJSON(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	live := openLiveBucket(t, js)
	wall := time.Now().UTC().Truncate(time.Second)
	stale := record(t, "stale", "fd10:2::/48", 2, "198.18.0.3", 51820)
	staleRev := put(t, kv, stale)
	heartbeat(t, live, stale, wall.Add(-3*time.Hour))
	fresh := record(t, "fresh", "fd10:1::/48", 1, "198.18.0.2", 51820)
	put(t, kv, fresh)
	put030(t, kv, "old-agent", "fd10:30::/48", 30)
	later := func() time.Time { return wall.Add(2 * time.Hour) }
	heartbeat(t, live, fresh, later().Add(-time.Minute))

	run := func(args ...string) pruneReport {
		t.Helper()
		code, stdout, stderr := execAt(t, later, append([]string{"prune", "-o", "json", "--offline-for", "1h", "--nats-url", url}, args...)...)
		if code != 0 {
			t.Fatalf("prune %q: exit %d: %s", args, code, stderr)
		}
		var r pruneReport
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("prune %q printed no JSON report: %v\n%s", args, err, stdout)
		}
		return r
	}
	actions := func(r pruneReport) map[string]string {
		out := map[string]string{}
		for _, h := range r.Hosts {
			out[h.Name] = h.Action
		}
		return out
	}

	dry := run("--dry-run")
	if diff := cmp.Diff(map[string]string{"stale": pruneWouldEvict, "old-agent": pruneKept}, actions(dry)); diff != "" {
		t.Errorf("dry run actions (-want +got):\n%s", diff)
	}
	if !dry.DryRun || dry.OfflineFor != "1h0m0s" || !recordExists(t, kv, stale.AllowedIP) {
		t.Errorf("dry run: %+v, stale kept %v", dry, recordExists(t, kv, stale.AllowedIP))
	}
	for _, h := range dry.Hosts {
		if h.Name == "stale" {
			want := prunedHost{Key: peer.Key(netip.MustParsePrefix(stale.AllowedIP)), Revision: staleRev, Name: "stale",
				AllowedIP: stale.AllowedIP, PublicKey: stale.PublicKey, Why: "last seen 5h ago", Action: pruneWouldEvict}
			lastSeen := wall.Add(-3 * time.Hour)
			want.LastSeen = &lastSeen
			if diff := cmp.Diff(want, h, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Created" }, cmp.Ignore())); diff != "" {
				t.Errorf("stale (-want +got):\n%s", diff)
			}
		}
	}

	done := run()
	if diff := cmp.Diff(map[string]string{"stale": pruneEvicted, "old-agent": pruneKept}, actions(done)); diff != "" {
		t.Errorf("prune actions (-want +got):\n%s", diff)
	}
	if recordExists(t, kv, stale.AllowedIP) || !recordExists(t, kv, fresh.AllowedIP) {
		t.Error("prune -o json: stale should be gone and fresh kept")
	}
	if empty := run("--offline-for", "100h"); len(empty.Hosts) != 0 || empty.Hosts == nil {
		t.Errorf("prune with nothing to do: hosts %#v, want an empty list", empty.Hosts)
	}
}

// A silent host whose public key another record carries too is kept: one
// of the records is a copy, and revoking the key is evict's choice to make.
func TestPruneLeavesASharedKeyToEvict(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	live := openLiveBucket(t, js)
	victim := record(t, "victim", "fd10:2::/48", 2, "198.18.0.3", 51820)
	put(t, kv, victim)
	heartbeat(t, live, victim, time.Now())
	planted := victim
	planted.AllowedIP = "fd10:1::/48"
	put(t, kv, planted)
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	code, stdout, stderr := execAt(t, later, "prune", "--offline-for", "1h", "--nats-url", url)
	if code != 0 || !strings.Contains(stdout, "kept victim fd10:2::/48") || !strings.Contains(stdout, "also has a record at fd10:1::/48") {
		t.Errorf("prune: exit %d, want victim kept naming the copy\n%s%s", code, stdout, stderr)
	}
	if revs, _ := bucket.Revocations(context.Background(), kv); len(revs) != 0 {
		t.Errorf("prune revoked a shared key: %v", revs)
	}
}
