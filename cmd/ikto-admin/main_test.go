package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// now is the pinned clock of the formatting tests.
var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// exec runs ikto-admin with args and a pinned clock.
func exec(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return execAt(t, func() time.Time { return now }, args...)
}

func execAt(t *testing.T, clock func() time.Time, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runAt(args, &out, &errb, clock)
	return code, out.String(), errb.String()
}

// testKey is a fixed key pair, so that listings are predictable.
func testKey(t *testing.T, seed byte) wgtypes.Key {
	t.Helper()
	raw := bytes.Repeat([]byte{seed}, wgtypes.KeyLen)
	k, err := wgtypes.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return wgtypes.Key(k).PublicKey()
}

// startNATS runs an embedded JetStream server on loopback and a random port
// and returns its URL and a JetStream handle; both go away with the test.
func startNATS(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	return s.URL(), js
}

// openBucket and openLiveBucket create the mesh's buckets, "ikto-mesh" and
// its heartbeat bucket.
func openBucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	return mustOpen(t, js, bucket.OpenBucket)
}

func openLiveBucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	return mustOpen(t, js, bucket.OpenLiveBucket)
}

func mustOpen(t *testing.T, js jetstream.JetStream, open func(context.Context, jetstream.JetStream, string, bool, int) (jetstream.KeyValue, error)) jetstream.KeyValue {
	t.Helper()
	kv, err := open(context.Background(), js, "ikto-mesh", true, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func record(t *testing.T, name, prefix string, seed byte, adv string, port int) peer.Record {
	t.Helper()
	return peer.Record{Name: name, PublicKey: testKey(t, seed).String(), AdvertiseAddress: adv, AllowedIP: prefix, WGPort: port}
}

func put(t *testing.T, kv jetstream.KeyValue, r peer.Record) uint64 {
	t.Helper()
	rev, err := kv.Put(context.Background(), peer.Key(netip.MustParsePrefix(r.AllowedIP)), r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func heartbeat(t *testing.T, live jetstream.KeyValue, r peer.Record, at time.Time) {
	t.Helper()
	hb := bucket.Heartbeat{PublicKey: r.PublicKey, Name: r.Name, At: at, Version: "v0.4.0"}
	if err := bucket.PutHeartbeat(context.Background(), live, netip.MustParsePrefix(r.AllowedIP), hb); err != nil {
		t.Fatal(err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"list", "extra"}, `unexpected argument "extra"`},
		{[]string{"-o", "yaml", "list"}, `-o "yaml": want table or json`},
		{[]string{"--timeout", "soon", "list"}, "invalid argument"},
		{[]string{"evict"}, "evict takes one host name, address or prefix, got 0 arguments"},
		{[]string{"evict", "a", "b"}, "got 2 arguments"},
		{[]string{"evict", "fd10::/abc"}, `"fd10::/abc" is not an IP address, prefix or host name`},
		{[]string{"evict", "fe80::1%eth0"}, "is not an IP address, prefix or host name"},
		{[]string{"unrevoke"}, "unrevoke takes one public key"},
		{[]string{"unrevoke", "AAAA"}, `"AAAA" is not a WireGuard public key`},
		{[]string{"prune"}, "prune needs --offline-for"},
		{[]string{"prune", "--offline-for", "-1h"}, "prune needs --offline-for"},
		{[]string{"status", "x"}, `unexpected argument "x"`},
		{[]string{"list"}, "no NATS server: pass --nats-url"},
		{[]string{"list", "--nats-url", "nats://127.0.0.1:1", "--mesh-cidr", "fd10::1/16"}, "--mesh-cidr"},
	} {
		code, stdout, stderr := exec(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "ikto-admin --help") {
			t.Errorf("ikto-admin %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("ikto-admin %q wrote to stdout: %q", tc.args, stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := exec(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "ikto-admin ") || !strings.Contains(stdout, "commit") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

func TestNATSUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close() // a port nobody listens on
	for _, cmd := range [][]string{{"list"}, {"evict", "fd10::1"}, {"unrevoke", testKey(t, 1).String()}, {"prune", "--offline-for", "1h"}} {
		code, _, stderr := exec(t, append(cmd, "--nats-url", url, "--timeout", "2s")...)
		if code != 1 || !strings.Contains(stderr, "NATS server "+url) {
			t.Errorf("%s with NATS down: exit %d, stderr %q; want 1 naming %s", cmd[0], code, stderr, url)
		}
	}
	// A password in the URL is masked in the message.
	withPassword := strings.Replace(url, "nats://", "nats://ops:s3cret@", 1)
	code, _, stderr := exec(t, "list", "--nats-url", withPassword, "--timeout", "2s")
	if masked := strings.Replace(url, "nats://", "nats://ops:xxxxx@", 1); code != 1 || !strings.Contains(stderr, masked) || strings.Contains(stderr, "s3cret") {
		t.Errorf("list with a password and NATS down: exit %d, stderr %q; want 1 naming %s", code, stderr, masked)
	}
}

func TestMissingBucket(t *testing.T) {
	url, _ := startNATS(t)
	code, _, stderr := exec(t, "list", "--nats-url", url, "--nats-kv", "nope")
	if code != 1 || !strings.Contains(stderr, "bucket nope does not exist") {
		t.Errorf("list of a missing bucket: exit %d, %q", code, stderr)
	}
}

// fillMesh puts a small mesh in the bucket: two healthy hosts (one online,
// one silent for 5 minutes), one that never sent a heartbeat, a record with
// a bad port, a duplicate public key, a record whose key is revoked and a
// revoked host whose record is gone.
func fillMesh(t *testing.T, kv, live jetstream.KeyValue) map[string]peer.Record {
	t.Helper()
	ctx := context.Background()
	recs := map[string]peer.Record{
		"alpha":   record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820),
		"bravo":   record(t, "bravo", "fd10:2::/48", 2, "198.18.0.3", 51820),
		"charlie": record(t, "charlie", "fd10:3::/48", 3, "198.18.0.4", 51821),
		"badport": record(t, "badport", "fd10:4::/48", 4, "198.18.0.5", 0),
		"dup":     record(t, "dup", "fd10:5::/48", 1, "198.18.0.6", 51820),
		"revoked": record(t, "revoked", "fd10:6::/48", 6, "198.18.0.7", 51820),
	}
	for _, name := range []string{"alpha", "bravo", "charlie", "badport", "dup", "revoked"} {
		put(t, kv, recs[name])
	}
	heartbeat(t, live, recs["alpha"], now.Add(-5*time.Second))
	heartbeat(t, live, recs["bravo"], now.Add(-5*time.Minute))
	// A heartbeat at charlie's prefix by another key says nothing about charlie.
	heartbeat(t, live, peer.Record{Name: "old", PublicKey: testKey(t, 9).String(), AllowedIP: "fd10:3::/48"}, now)
	for _, seed := range []byte{6, 7} {
		r := peer.Record{Name: "revoked", AllowedIP: "fd10:6::/48"}
		if seed == 7 {
			r = peer.Record{Name: "gone", AllowedIP: "fd10:7::/48"}
		}
		if err := bucket.Revoke(ctx, kv, testKey(t, seed), r, now.Add(-time.Hour), bucket.Operator{}); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

func TestListTable(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	live := openLiveBucket(t, js)
	fillMesh(t, kv, live)

	code, stdout, stderr := exec(t, "list", "--nats-url", url)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	k := func(seed byte) string { return testKey(t, seed).String() }
	key := func(n int) string { return peer.Key(netip.MustParsePrefix(fmt.Sprintf("fd10:%d::/48", n))) }
	// The revocation's key is the longest: the other keys are padded to it.
	revoked7 := peer.RevokedKey(testKey(t, 7))
	pad := func(s string) string { return strings.Repeat(" ", len(revoked7)+2-len(s)) }
	shared := func(at, other string) string {
		return peer.Key(netip.MustParsePrefix(at)) + " (" + at + "): its public key also has a record at " + other +
			"; one is a copy of another host's key (ikto-admin evict PREFIX --keep-key removes a copy)\n"
	}
	want := "" +
		"NAME     PREFIX       ENDPOINT          PUBLIC-KEY                                    STATE                                       LIVENESS\n" +
		"alpha    fd10:1::/48  198.18.0.2:51820  " + k(1) + "  valid, key shared                           online\n" +
		"bravo    fd10:2::/48  198.18.0.3:51820  " + k(2) + "  valid                                       last seen 5m ago\n" +
		"charlie  fd10:3::/48  198.18.0.4:51821  " + k(3) + "  valid                                       never\n" +
		"badport  fd10:4::/48  198.18.0.5:0      " + k(4) + "  rejected: bad_port                          never\n" +
		"dup      fd10:5::/48  198.18.0.6:51820  " + k(1) + "  rejected: duplicate_public_key, key shared  never\n" +
		"revoked  fd10:6::/48  198.18.0.7:51820  " + k(6) + "  revoked                                     never\n" +
		"gone     fd10:7::/48  -                 " + k(7) + "  revoked                                     never\n" +
		"\n" +
		"KEY" + pad("KEY") + "STATE     REVISION  WHY\n" +
		key(4) + pad(key(4)) + "rejected  4         wg_port 0 is not 1-65535\n" +
		key(5) + pad(key(5)) + "rejected  5         public key already used by " + key(1) + "\n" +
		key(6) + pad(key(6)) + "revoked   6         public key " + k(6) + " is revoked\n" +
		revoked7 + "  revoked   -         evicted 2026-11-24T11:00:00Z; no record left\n" +
		shared("fd10:1::/48", "fd10:5::/48") +
		shared("fd10:5::/48", "fd10:1::/48")
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("list table (-want +got):\n%s", diff)
	}
}

func TestListJSON(t *testing.T) {
	url, js := startNATS(t)
	kv := openBucket(t, js)
	live := openLiveBucket(t, js)
	recs := fillMesh(t, kv, live)

	code, stdout, stderr := exec(t, "-o", "json", "list", "--nats-url", url)
	if code != 0 {
		t.Fatalf("list -o json: exit %d: %s", code, stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("list -o json is not a JSON array: %v\n%s", err, stdout)
	}
	if len(got) != 7 {
		t.Fatalf("%d rows, want 7:\n%s", len(got), stdout)
	}
	if strings.Contains(stdout, `"duplicate"`) {
		t.Errorf("a row shows a duplicate none of the heartbeats reports:\n%s", stdout)
	}
	byName := map[string]map[string]any{}
	for _, r := range got {
		for _, f := range []string{"name", "public_key", "advertise_address", "allowed_ip", "wg_port", "key", "revision", "state", "reason", "last_seen", "online"} {
			if _, ok := r[f]; !ok {
				t.Errorf("row %v lacks %q", r["name"], f)
			}
		}
		byName[r["name"].(string)] = r
	}
	alpha := byName["alpha"]
	want := map[string]any{
		"name": "alpha", "public_key": recs["alpha"].PublicKey, "advertise_address": "198.18.0.2",
		"allowed_ip": "fd10:1::/48", "wg_port": 51820.0, "key": peer.Key(netip.MustParsePrefix("fd10:1::/48")),
		"revision": 1.0, "state": "valid", "reason": "", "detail": "",
		"last_seen": now.Add(-5 * time.Second).Format(time.RFC3339), "online": true, "agent_version": "v0.4.0",
		"also_at": []any{"fd10:5::/48"},
	}
	delete(alpha, "created") // the server's clock
	if diff := cmp.Diff(want, alpha); diff != "" {
		t.Errorf("alpha (-want +got):\n%s", diff)
	}
	for name, wantState := range map[string][2]any{
		"bravo": {"valid", false}, "charlie": {"valid", false}, "badport": {"rejected", false},
		"dup": {"rejected", false}, "revoked": {"revoked", false}, "gone": {"revoked", false},
	} {
		r := byName[name]
		if r["state"] != wantState[0] || r["online"] != wantState[1] {
			t.Errorf("%s: state %v online %v, want %v %v", name, r["state"], r["online"], wantState[0], wantState[1])
		}
	}
	if byName["charlie"]["last_seen"] != nil || byName["bravo"]["last_seen"] != now.Add(-5*time.Minute).Format(time.RFC3339) {
		t.Errorf("last_seen: charlie %v (want null), bravo %v", byName["charlie"]["last_seen"], byName["bravo"]["last_seen"])
	}
	if byName["badport"]["reason"] != "bad_port" || byName["dup"]["reason"] != "duplicate_public_key" {
		t.Errorf("reasons: badport %v, dup %v", byName["badport"]["reason"], byName["dup"]["reason"])
	}

	// An empty bucket is an empty array, not null.
	url2, js2 := startNATS(t)
	openBucket(t, js2)
	if code, stdout, _ := exec(t, "list", "-o", "json", "--nats-url", url2); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("empty bucket: exit %d, %q; want []", code, stdout)
	}
}

// TestListRulesFromConfig: -c supplies the server, the bucket and the mesh
// without the config being valid for an agent (no key file here).
func TestListRulesFromConfig(t *testing.T) {
	url, js := startNATS(t)
	kv, err := bucket.OpenBucket(context.Background(), js, "other", true, 1)
	if err != nil {
		t.Fatal(err)
	}
	put(t, kv, record(t, "v4", "100.64.1.0/24", 1, "198.18.0.2", 51820))
	cfg := filepath.Join(t.TempDir(), "ikto.json")
	body := `{"nats_url": "` + url + `", "nats_kv": "other", "mesh_cidr": "100.64.0.0/10", "subnet_prefix": 24, "private_key_path": "/nonexistent"}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := exec(t, "-c", cfg, "list")
	if code != 0 || !strings.Contains(stdout, "100.64.1.0/24") || !strings.Contains(stdout, " valid ") {
		t.Errorf("list -c: exit %d\n%s%s", code, stdout, stderr)
	}
	// The default mesh rejects it: the rules really come from -c.
	code, stdout, _ = exec(t, "list", "--nats-url", url, "--nats-kv", "other")
	if code != 0 || !strings.Contains(stdout, "rejected: outside_mesh") {
		t.Errorf("list without -c: exit %d\n%s", code, stdout)
	}
	code, _, stderr = exec(t, "-c", filepath.Join(t.TempDir(), "missing.json"), "list")
	if code != 1 || !strings.Contains(stderr, "missing.json") {
		t.Errorf("missing -c: exit %d, %q", code, stderr)
	}
}

// A credentials file that is not there is named as missing, before any
// server is asked: the server is fine (it runs here), the file is not.
func TestMissingCredsFile(t *testing.T) {
	url, _ := startNATS(t)
	missing := filepath.Join(t.TempDir(), "operator.creds")
	t.Setenv("NATS_CREDS", "")
	for _, args := range [][]string{
		{"list", "--nats-url", url, "--nats-creds", missing},
		{"evict", "fd10:1::1", "--nats-url", url, "--nats-creds", missing},
	} {
		code, stdout, stderr := exec(t, args...)
		if code != 1 || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want exit 1", args, code, stdout)
		}
		for _, want := range []string{missing, "no such file", "--nats-creds FILE"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		}
		if strings.Contains(stderr, "server is running") {
			t.Errorf("%v: blames the server for a missing file:\n%s", args, stderr)
		}
	}
}

// list marks a record whose host's heartbeat reports another live agent
// with its key, while the host is online; a silent host's old report is
// no longer news.
func TestListMarksARecordRunningTwice(t *testing.T) {
	r := record(t, "alpha", "fd10:1::/48", 1, "198.18.0.2", 51820)
	entries := []bucket.Entry{{Key: peer.Key(netip.MustParsePrefix(r.AllowedIP)), Value: r.Encode(), Revision: 1}}
	rules := peer.Rules{Mesh: netip.MustParsePrefix("fd10::/16"), Bits: 48}
	twin := &bucket.Duplicate{Writer: bucket.Writer{Instance: "bbbb", Addr: "198.18.0.3"}, Since: now.Add(-time.Minute)}
	for _, tc := range []struct {
		ago   time.Duration
		state string
		dup   bool
	}{{5 * time.Second, "valid, running twice", true}, {time.Hour, "valid", false}} {
		hb := bucket.Heartbeat{PublicKey: r.PublicKey, At: now.Add(-tc.ago), Duplicate: twin}
		rows := buildRows(entries, nil, map[netip.Prefix]bucket.Heartbeat{netip.MustParsePrefix(r.AllowedIP): hb}, rules, now)
		if got := rows[0].stateText(); got != tc.state || (rows[0].Duplicate != nil) != tc.dup {
			t.Errorf("heartbeat %s old: state %q, duplicate %v; want %q, %v", tc.ago, got, rows[0].Duplicate, tc.state, tc.dup)
		}
	}
}
