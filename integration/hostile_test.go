package integration_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// hostileWorld is what a hostile record is made from: the running mesh, a
// /48 of the mesh no host holds, and a record for it that every rule accepts
// until a case breaks one.
type hostileWorld struct {
	m     *mesh
	hosts []*harness.Host
	free  netip.Prefix
	good  peer.Record
}

// hostileCase is one record that breaks one acceptance rule of docs/contract.md §4.
type hostileCase struct {
	name string
	// record is the bucket key and value to put.
	record func(w *hostileWorld) (key string, value []byte)
	// reason is how every agent must count it. A record that reuses a
	// host's public key (keyOf) is that host's to remove: its agent deletes
	// it, and no device ever applies it.
	reason peer.Reason
	keyOf  string
}

// with is the world's good record, changed by f, under the key of its
// allowed_ip as written.
func (w *hostileWorld) with(f func(r *peer.Record)) (string, []byte) {
	r := w.good
	f(&r)
	return rawKey(r.AllowedIP), r.Encode()
}

// rawKey is peers. + the padded base64url of text, canonical or not.
func rawKey(text string) string {
	return peer.PeersPrefix + base64.URLEncoding.EncodeToString([]byte(text))
}

func hostileCases() []hostileCase {
	endpoint := func(addr string) func(w *hostileWorld) (string, []byte) {
		return func(w *hostileWorld) (string, []byte) {
			return w.with(func(r *peer.Record) { r.AdvertiseAddress = addr })
		}
	}
	port := func(p int) func(w *hostileWorld) (string, []byte) {
		return func(w *hostileWorld) (string, []byte) { return w.with(func(r *peer.Record) { r.WGPort = p }) }
	}
	prefix := func(f func(w *hostileWorld) string) func(w *hostileWorld) (string, []byte) {
		return func(w *hostileWorld) (string, []byte) {
			p := f(w)
			return w.with(func(r *peer.Record) { r.AllowedIP = p })
		}
	}
	alpha := func(w *hostileWorld) netip.Prefix { return w.hosts[0].Prefix() }
	return []hostileCase{
		{"not JSON", func(w *hostileWorld) (string, []byte) {
			return peer.Key(w.free), []byte("this is not a peer record")
		}, peer.ReasonMalformed, ""},
		{"huge value", func(w *hostileWorld) (string, []byte) {
			return w.with(func(r *peer.Record) { r.Name = strings.Repeat("x", 512<<10) })
		}, peer.ReasonTooLarge, ""},
		{"another host's prefix under a key that is not its encoding", func(w *hostileWorld) (string, []byte) {
			_, v := w.with(func(r *peer.Record) { r.AllowedIP = alpha(w).String() })
			return peer.Key(w.free), v
		}, peer.ReasonKeyMismatch, ""},
		{"another host's prefix spelled out", prefix(func(w *hostileWorld) string {
			return alpha(w).Addr().StringExpanded() + "/48"
		}), peer.ReasonBadPrefix, ""},
		{"prefix outside the mesh", prefix(func(*hostileWorld) string { return "fc00:1:2::/48" }), peer.ReasonOutsideMesh, ""},
		{"v6 default route", prefix(func(*hostileWorld) string { return "::/0" }), peer.ReasonOutsideMesh, ""},
		{"v4 default route", prefix(func(*hostileWorld) string { return "0.0.0.0/0" }), peer.ReasonOutsideMesh, ""},
		{"prefix covering another host's", prefix(func(w *hostileWorld) string {
			return netip.PrefixFrom(alpha(w).Addr(), 32).Masked().String()
		}), peer.ReasonWrongLength, ""},
		{"the whole mesh", prefix(func(w *hostileWorld) string { return w.m.net.Mesh.String() }), peer.ReasonWrongLength, ""},
		{"prefix narrower than subnet_prefix", prefix(func(w *hostileWorld) string {
			return netip.PrefixFrom(w.free.Addr(), 64).String()
		}), peer.ReasonWrongLength, ""},
		{"another host's public key", func(w *hostileWorld) (string, []byte) {
			return w.with(func(r *peer.Record) { r.PublicKey = w.hosts[1].PublicKey.String() })
		}, peer.ReasonDuplicateKey, "bravo"},
		{"all-zero public key", func(w *hostileWorld) (string, []byte) {
			return w.with(func(r *peer.Record) { r.PublicKey = wgtypes.Key{}.String() })
		}, peer.ReasonBadPublicKey, ""},
		{"unspecified v4 endpoint", endpoint("0.0.0.0"), peer.ReasonBadEndpoint, ""},
		{"unspecified v6 endpoint", endpoint("::"), peer.ReasonBadEndpoint, ""},
		{"multicast endpoint", endpoint("224.0.0.1"), peer.ReasonBadEndpoint, ""},
		{"loopback endpoint", endpoint("127.0.0.1"), peer.ReasonBadEndpoint, ""},
		{"link-local v6 endpoint", endpoint("fe80::1"), peer.ReasonBadEndpoint, ""},
		{"endpoint inside the mesh", func(w *hostileWorld) (string, []byte) {
			return w.with(func(r *peer.Record) { r.AdvertiseAddress = w.hosts[0].PrivateAddress.Next().String() })
		}, peer.ReasonBadEndpoint, ""},
		{"port 0", port(0), peer.ReasonBadPort, ""},
		{"port 65536", port(65536), peer.ReasonBadPort, ""},
	}
}

// TestHostileRecords puts one hostile record at a time into a running
// three-host mesh. For each, every agent must reject it with its reason,
// count it once (also across later reconcile passes), log it once, keep
// running, and leave its device exactly as it was; removing the record
// clears the count and changes nothing either. The mesh still carries
// traffic at the end.
func TestHostileRecords(t *testing.T) {
	m := newMesh(t)
	hosts := m.startAll("alpha", "bravo", "charlie")
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	free := netip.PrefixFrom(freeAddress(t, m, hosts), 48).Masked()
	w := &hostileWorld{m: m, hosts: hosts, free: free, good: peer.Record{
		Name: "mallory", PublicKey: key.PublicKey().String(), AdvertiseAddress: unusedUnderlay(m).String(),
		AllowedIP: free.String(), WGPort: 51820,
	}}
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.exitedEarly(hosts); err != nil {
				t.Fatal(err) // an earlier case broke the mesh: nothing here would mean anything
			}
			key, value := tc.record(w)
			if tc.keyOf != "" {
				checkRemovedByItsKey(t, w, tc, key, value)
				return
			}
			checkRejectedEverywhere(t, w, tc, key, value)
		})
	}
	t.Run("control: the unbroken record is accepted", func(t *testing.T) {
		checkAcceptedEverywhere(t, w)
	})
	m.pingAll(hosts)
}

// checkAcceptedEverywhere puts the world's good record, which every case
// above broke in one way: every device must list it as a peer, and drop it
// again when it is deleted. It shows that the rejections above are the
// agents' verdicts on the broken field, not on the record as a whole.
func checkAcceptedEverywhere(t *testing.T, w *hostileWorld) {
	t.Helper()
	ctx := context.Background()
	key := peer.Key(w.free)
	if _, err := w.m.bucket.Put(ctx, key, w.good.Encode()); err != nil {
		t.Fatal(err)
	}
	extra := map[string]harness.PeerView{w.good.PublicKey: {AllowedIPs: w.good.AllowedIP, Endpoint: w.good.Endpoint().String()}}
	testkit.Eventually(t, convergeTimeout, "every agent to add the good record", func() error {
		if err := w.m.exitedEarly(w.hosts); err != nil {
			return err
		}
		for _, h := range w.hosts {
			if err := checkPeers(h, w.hosts, extra); err != nil {
				return err
			}
		}
		return nil
	})
	if err := w.m.bucket.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	w.m.waitConverged(w.hosts)
}

// TestHostileTakeover has a writer with bucket access but no regard for the
// claim protocol take alpha's prefix for another key, again and again (a
// Create, which the protocol uses, is refused, so it overwrites). alpha's
// agent restores its record with compare-and-set each time, a bounded number
// of times; then it stands down — no peers, still running, status "lost",
// its log naming the holder and the fix — while the other agents keep alpha
// where it signed it (the intruder's record is no statement of alpha's). Once an operator evicts the intruder (key revoked, record
// deleted), alpha claims its prefix back by itself, without a restart: the
// mesh carries traffic, and no device lists the intruder.
func TestHostileTakeover(t *testing.T) {
	m := newMesh(t)
	bins := harnesstest.Binaries(t, harness.AgentBinary, harness.AdminBinary)
	hosts := m.startAll("alpha", "bravo", "charlie")
	alpha, rest := hosts[0], hosts[1:]
	ctx := context.Background()
	intruder := overwriteClaim(t, m, alpha)
	overwrites := 1
	testkit.EventuallyContext(t, convergeTimeout, "alpha to give up its prefix", func(ctx context.Context) error {
		if err := m.exitedEarly(hosts); err != nil {
			return err
		}
		st, err := alpha.Status(ctx)
		if err != nil {
			return err
		}
		if st.Claim == "lost" {
			return nil
		}
		// Each time alpha's record is back, the intruder writes again.
		if rec, err := m.bucket.Record(ctx, alpha.Prefix()); err == nil && rec.PublicKey == alpha.PublicKey.String() {
			overwriteClaim(t, m, alpha)
			overwrites++
		}
		return fmt.Errorf("alpha's claim is %q after %d overwrites", st.Claim, overwrites)
	})
	t.Logf("alpha stood down after the intruder wrote %d times", overwrites)
	st, err := alpha.Status(ctx)
	if err != nil || st.State != "standing down" || len(st.Peers) != 0 {
		t.Fatalf("alpha's status after it stood down: %+v, %v; want standing down with no peers", st, err)
	}
	for _, want := range []string{alpha.Prefix().String(), "intruder", intruder.PublicKey, "ikto-admin evict"} {
		if !strings.Contains(m.agents[alpha.Name].Logs(), want) {
			t.Errorf("alpha's log does not name %s:\n%s", want, m.agents[alpha.Name].LogTail(10))
		}
	}
	// The intruder's record is state, not a statement alpha made: bravo and
	// charlie keep alpha at its prefix as alpha signed it, and never route
	// the intruder there.
	for _, h := range rest {
		if err := harness.CheckDevice(h, hosts); err != nil {
			t.Fatalf("while the intruder holds alpha's key in the bucket: %v", err)
		}
	}

	// The operator's repair: evict whoever holds alpha's address now.
	code, stdout, stderr := runAdmin(t, bins, "-c", m.agents[rest[0].Name].ConfigPath, "evict", alpha.PrivateAddress.String())
	if code != 0 {
		t.Fatalf("evict the intruder exited %d:\n%s%s", code, stdout, stderr)
	}
	m.waitConverged(hosts)
	m.pingAll(hosts)
	rec, err := m.bucket.Record(ctx, alpha.Prefix())
	if err != nil || rec.PublicKey != alpha.PublicKey.String() {
		t.Fatalf("alpha's record after the eviction: %+v, %v", rec, err)
	}
	if _, err := m.bucket.Get(ctx, peer.RevokedKey(mustParseKey(t, intruder.PublicKey))); err != nil {
		t.Errorf("the intruder's key is not revoked: %v", err)
	}
}

// overwriteClaim puts the mesh's intruder record (one fresh key per test)
// over h's claim, after checking that the claim protocol's Create would be
// refused.
func overwriteClaim(t *testing.T, m *mesh, h *harness.Host) peer.Record {
	t.Helper()
	intruder := m.intruder
	if intruder.PublicKey == "" {
		intruder = intruderRecord(t, m, h)
		m.intruder = intruder
	}
	ctx, key := context.Background(), peer.Key(h.Prefix())
	if _, err := m.bucket.Create(ctx, key, intruder.Encode()); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("Create over %s's claim: %v, want %v", h.Name, err, jetstream.ErrKeyExists)
	}
	if _, err := m.bucket.Put(ctx, key, intruder.Encode()); err != nil {
		t.Fatal(err)
	}
	return intruder
}

func mustParseKey(t *testing.T, s string) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
