package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func createBucket(t *testing.T, url, name string) jetstream.KeyValue {
	t.Helper()
	_, js := natstest.Connect(t, url)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: name, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func claim(t *testing.T, kv jetstream.KeyValue, p netip.Prefix) {
	t.Helper()
	rec := peer.Record{Name: "other", PublicKey: "x", AdvertiseAddress: "192.0.2.1", AllowedIP: p.String(), WGPort: 51820}
	if _, err := kv.Create(t.Context(), peer.Key(p), rec.Encode()); err != nil {
		t.Fatalf("claim %s: %v", p, err)
	}
}

func TestNATSSkipsClaimedPrefixes(t *testing.T) {
	url := natstest.Start(t).URL()
	kv := createBucket(t, url, "ikto-mesh")

	t.Run("first draw claimed", func(t *testing.T) {
		d := draws(t, 1, "fd10::/16", 48, 2)
		claim(t, kv, d[0])
		c, r := mustRun(t, seeded(1), "--nats-url", url)
		if got := checkPrivateAddress(t, c); got != d[1] {
			t.Errorf("drew %s, want the second draw %s (the first, %s, is claimed)", got, d[1], d[0])
		}
		if r.stderr != "" {
			t.Errorf("stderr = %q, want nothing", r.stderr)
		}
		if c.NATSURL != url {
			t.Errorf("nats_url = %q, want %q", c.NATSURL, url)
		}
	})

	t.Run("deleted claim is free", func(t *testing.T) {
		d := draws(t, 2, "fd10::/16", 48, 1)
		claim(t, kv, d[0])
		if err := kv.Delete(t.Context(), peer.Key(d[0])); err != nil {
			t.Fatal(err)
		}
		c, _ := mustRun(t, seeded(2), "--nats-url", url)
		if got := checkPrivateAddress(t, c); got != d[0] {
			t.Errorf("drew %s, want %s (its record was deleted)", got, d[0])
		}
	})

	t.Run("ipv4 several servers", func(t *testing.T) {
		d := draws(t, 3, "100.64.0.0/10", 24, 3)
		claim(t, kv, d[0])
		claim(t, kv, d[1])
		c, _ := mustRun(t, seeded(3), "-m", "100.64.0.0/10", "-p", "24", "--nats-url", url+","+url)
		if got := checkPrivateAddress(t, c); got != d[2] {
			t.Errorf("drew %s, want the third draw %s", got, d[2])
		}
	})

	t.Run("mesh full", func(t *testing.T) {
		// fd00::/127 holds two /128s: claim both.
		claim(t, kv, netip.MustParsePrefix("fd00::/128"))
		claim(t, kv, netip.MustParsePrefix("fd00::1/128"))
		r := runInit(t, seeded(4), "-m", "fd00::/127", "-p", "128", "--nats-url", url)
		if r.code != 1 || !strings.Contains(r.stderr, "mesh looks full") || !strings.Contains(r.stderr, "ikto-mesh") {
			t.Errorf("full mesh: exit %d, stderr %q; want 1 and \"mesh looks full\"", r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("full mesh printed a config:\n%s", r.stdout)
		}
	})

	t.Run("revoked key", func(t *testing.T) {
		// An evicted host run through ikto-init again: its key file is
		// kept, and the mesh has revoked it.
		path := filepath.Join(t.TempDir(), "wg.key")
		key, err := config.CreatePrivateKey(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Create(t.Context(), peer.RevokedKey(key.PublicKey()), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		r := runInit(t, seeded(6), "--nats-url", url, "--private-key-path", path, "--advertise-address", "192.0.2.10")
		if r.code != 1 || r.stdout != "" {
			t.Errorf("revoked key: exit %d, stdout %q; want 1 and no config", r.code, r.stdout)
		}
		for _, want := range []string{path, "revoked", "mv " + path} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("revoked key: stderr does not say %q:\n%s", want, r.stderr)
			}
		}
		// Moved away as told: a new key, and a config.
		if err := os.Rename(path, path+".revoked"); err != nil {
			t.Fatal(err)
		}
		c, _ := mustRun(t, seeded(6), "--nats-url", url, "--private-key-path", path, "--advertise-address", "192.0.2.10")
		if c.PrivateKeyPath != path {
			t.Errorf("private_key_path = %q, want %q", c.PrivateKeyPath, path)
		}
		if k, err := config.LoadPrivateKey(path); err != nil || k.PublicKey() == key.PublicKey() {
			t.Errorf("after moving the revoked key away: key %v, err %v; want a new key", k.PublicKey(), err)
		}
	})

	t.Run("bucket missing", func(t *testing.T) {
		r := runInit(t, seeded(5), "--nats-url", url, "--nats-kv", "no-such-bucket")
		if r.code != 0 {
			t.Fatalf("exit %d, want 0; stderr %q", r.code, r.stderr)
		}
		checkPrivateAddress(t, decodeStrict(t, []byte(r.stdout)))
		checkWarning(t, r.stderr, url, "no-such-bucket", "does not exist")
	})
}

func TestNATSUnreachable(t *testing.T) {
	// A port that was just free and is now closed: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()

	start := time.Now()
	r := runInit(t, seeded(6), "--nats-url", url)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr %q", r.code, r.stderr)
	}
	c := decodeStrict(t, []byte(r.stdout))
	if got, want := checkPrivateAddress(t, c), draws(t, 6, "fd10::/16", 48, 1)[0]; got != want {
		t.Errorf("drew %s, want the first draw %s", got, want)
	}
	checkWarning(t, r.stderr, url)
	if d := time.Since(start); d > 2*natsTimeout {
		t.Errorf("took %s with NATS down, want well under %s", d, 2*natsTimeout)
	}
}

// checkWarning fails unless stderr is exactly one warning line holding words.
func checkWarning(t *testing.T, stderr string, words ...string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.Contains(stderr, "warning") {
		t.Errorf("stderr %q, want one warning line", stderr)
	}
	for _, w := range words {
		if !strings.Contains(stderr, w) {
			t.Errorf("warning %q does not contain %q", stderr, w)
		}
	}
}
