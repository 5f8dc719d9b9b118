package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/api"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// serveStatus answers GET /v1/status on a unix socket in a temp dir.
func serveStatus(t *testing.T, st api.Status) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.JSON(func() api.Status { return st })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func cannedStatus() api.Status {
	rec := now.Add(-3 * time.Second)
	hs := now.Add(-90 * time.Second)
	return api.Status{
		Self:    peer.Record{Name: "alpha", PublicKey: "SELFKEY=", AdvertiseAddress: "198.18.0.2", AllowedIP: "fd10:1::/48", WGPort: 51820},
		Address: "fd10:1::1", Backend: "userspace", Device: "wg-ikto",
		NATS:  api.NATSStatus{Connected: true, Server: "nats://198.18.0.1:4222", Bucket: "ikto-mesh"},
		State: "synced", Claim: "held", Synced: true, LastReconcile: &rec,
		Peers: []api.PeerStatus{
			{Record: peer.Record{Name: "bravo", PublicKey: "BRAVO=", AdvertiseAddress: "198.18.0.3", AllowedIP: "fd10:2::/48", WGPort: 51820},
				Endpoint: "198.18.0.3:51820", AllowedIPs: []string{"fd10:2::/48"}, LatestHandshake: &hs, Handshake: "established", RxBytes: 1536, TxBytes: 100},
			{Endpoint: "198.18.0.9:51820", AllowedIPs: []string{"fd10:9::/48"}, Handshake: "stale"},
		},
		Rejected: []api.Rejected{{Key: "peers.x", Revision: 7, Reason: "bad_port", Detail: "wg_port 0 is not 1-65535"}},
	}
}

func TestStatusTable(t *testing.T) {
	sock := serveStatus(t, cannedStatus())
	code, stdout, stderr := exec(t, "status", "-s", sock)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	want := "" +
		"self            alpha fd10:1::/48 (public key SELFKEY=)\n" +
		"address         fd10:1::1\n" +
		"endpoint        198.18.0.2:51820\n" +
		"backend         userspace\n" +
		"device          wg-ikto\n" +
		"nats            connected to nats://198.18.0.1:4222 (bucket ikto-mesh)\n" +
		"state           synced\n" +
		"claim           held\n" +
		"synced          yes\n" +
		"last reconcile  2026-11-24T11:59:57Z (3s ago)\n" +
		"\n" +
		"2 peers\n" +
		"NAME   PREFIX       ENDPOINT          HANDSHAKE      RX       TX\n" +
		"bravo  fd10:2::/48  198.18.0.3:51820  1m ago         1.5 KiB  100 B\n" +
		"-      fd10:9::/48  198.18.0.9:51820  never (stale)  0 B      0 B\n" +
		"\n" +
		"1 rejected records\n" +
		"KEY      REVISION  REASON    DETAIL\n" +
		"peers.x  7         bad_port  wg_port 0 is not 1-65535\n"
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("status table (-want +got):\n%s", diff)
	}
}

// ip prints this host's mesh address, as the agent reports it, for scripts
// (ping "$(ikto-admin ip)").
func TestIP(t *testing.T) {
	sock := serveStatus(t, cannedStatus())
	code, stdout, stderr := exec(t, "ip", "-s", sock)
	if code != 0 || stdout != "fd10:1::1\n" {
		t.Errorf("ip: exit %d, %q, %q; want 0 and the address", code, stdout, stderr)
	}
	code, stdout, stderr = exec(t, "ip", "-s", sock, "--prefix")
	if code != 0 || stdout != "fd10:1::/48\n" {
		t.Errorf("ip --prefix: exit %d, %q, %q; want 0 and the prefix", code, stdout, stderr)
	}
}

// A disconnected agent's status names the servers it tries and why it
// cannot reach them.
func TestStatusNamesTheUnreachableServer(t *testing.T) {
	st := cannedStatus()
	st.NATS = api.NATSStatus{URL: "nats://198.18.0.1:4222", LastError: "dial tcp 198.18.0.1:4222: connect: connection refused", Bucket: "ikto-mesh"}
	st.Synced = false
	code, stdout, _ := exec(t, "status", "-s", serveStatus(t, st))
	want := "nats            disconnected from nats://198.18.0.1:4222, last error: dial tcp 198.18.0.1:4222: connect: connection refused (bucket ikto-mesh)\n"
	if code != 1 || !strings.Contains(stdout, want) {
		t.Errorf("status of a disconnected agent: exit %d, want 1 and %q in\n%s", code, want, stdout)
	}
}

func TestStatusJSON(t *testing.T) {
	want := cannedStatus()
	sock := serveStatus(t, want)
	code, stdout, stderr := exec(t, "status", "-s", sock, "-o", "json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d: %s", code, stderr)
	}
	var got api.Status
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, stdout)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status -o json (-want +got):\n%s", diff)
	}
	for _, f := range []string{`"name"`, `"public_key"`, `"advertise_address"`, `"allowed_ip"`, `"wg_port"`, `"latest_handshake"`, `"rx_bytes"`} {
		if !strings.Contains(stdout, f) {
			t.Errorf("status -o json lacks %s", f)
		}
	}
}

// status exits 0 only for an agent that is synced and connected: a script
// or a monitor reads the exit status.
func TestStatusExitsNonZeroUnlessSyncedAndConnected(t *testing.T) {
	st := cannedStatus()
	st.State, st.Synced, st.NATS.Connected = "waiting for NATS", false, false
	sock := serveStatus(t, st)
	for _, args := range [][]string{{"status", "-s", sock}, {"status", "-s", sock, "-o", "json"}} {
		code, stdout, stderr := exec(t, args...)
		if code != 1 || !strings.Contains(stderr, "waiting for NATS") || !strings.Contains(stdout, "waiting for NATS") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want the status printed and exit 1 naming the state", args, code, stdout, stderr)
		}
	}
}

// A host whose key another live agent runs with (a clone) shows it, with
// the fix, and status exits 1 while it lasts.
func TestStatusShowsADuplicate(t *testing.T) {
	st := cannedStatus()
	st.Duplicate = &api.Duplicate{Instance: "bbbb", Addr: "198.18.0.3", Name: "alpha", Version: "v0.5.0", Since: now.Add(-time.Minute),
		Fix: "on the copy, move the key away and run ikto-init again"}
	code, stdout, stderr := exec(t, "status", "-s", serveStatus(t, st))
	line := "duplicate       another agent runs with this host's key: instance bbbb at 198.18.0.3 (name alpha, version v0.5.0), since 2026-11-24T11:59:00Z\n"
	if code != 1 || !strings.Contains(stdout, line) || !strings.Contains(stderr, "bbbb") || !strings.Contains(stderr, "ikto-init") {
		t.Errorf("status with a duplicate: exit %d, stdout\n%s\nstderr %q; want exit 1, %q and the fix", code, stdout, stderr, line)
	}
}

func TestStatusNoAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	code, _, stderr := exec(t, "status", "-s", sock)
	if code != 1 || !strings.Contains(stderr, sock) {
		t.Errorf("status without an agent: exit %d, %q; want 1 naming the socket", code, stderr)
	}
}

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 5*time.Minute + 10*time.Second: "5m",
		3 * time.Hour: "3h", 47 * time.Hour: "47h", 72 * time.Hour: "3d",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// Record names come from anyone with bucket access: control characters must
// not reach the operator's terminal raw.
func TestDashQuotesControlCharacters(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "-"},
		{"host-a", "host-a"},
		{"häst ünïcode", "häst ünïcode"},
		{"evil\x1b[2Jname", `"evil\x1b[2Jname"`},
		{"two\nlines", `"two\nlines"`},
		{"tab\tbed", `"tab\tbed"`},
	}
	for _, tt := range tests {
		if got := dash(tt.in); got != tt.want {
			t.Errorf("dash(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
