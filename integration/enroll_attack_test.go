package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// refusedAttackTimeout bounds one attack: the server's refusal arrives in
// milliseconds, and a refused request is never answered.
const refusedAttackTimeout = 1500 * time.Millisecond

// attack is one thing a compromised host's credentials must not be able to
// do, and the subject the server must name when it refuses.
type attack struct {
	name    string
	subject string
	do      func(ctx context.Context, c *bucket.Conn) error
	// async: the client call itself succeeds (a subscription); only the
	// server's refusal tells.
	async bool
}

// attacks are what host a's user tries against host b, whose replies come
// under bInbox.
func attacks(a, b *harness.Host, bInbox string, free netip.Prefix) []attack {
	bKey := peer.Key(b.Prefix())
	kvSubject := func(bucketName, key string) string { return "$KV." + bucketName + "." + key }
	live := bucket.LiveBucket(bucketName)
	aRecord := peer.Record{Name: a.Name, PublicKey: a.PublicKey.String(), AdvertiseAddress: a.Addr.String(), WGPort: 51820}
	over := aRecord
	over.AllowedIP = b.Prefix().String()
	elsewhere := aRecord
	elsewhere.AllowedIP = free.String()
	revocation := []byte(fmt.Sprintf(`{"public_key":%q,"allowed_ip":%q,"name":%q,"revoked_at":%q}`,
		b.PublicKey, b.Prefix(), b.Name, time.Now().UTC().Format(time.RFC3339)))
	api := "$JS.API."
	return []attack{
		{name: "overwrite b's record", subject: kvSubject(bucketName, bKey), do: onMesh(func(ctx context.Context, kv jetstream.KeyValue) error {
			_, err := kv.Put(ctx, bKey, over.Encode())
			return err
		})},
		{name: "delete b's record", subject: kvSubject(bucketName, bKey), do: onMesh(func(ctx context.Context, kv jetstream.KeyValue) error {
			return kv.Delete(ctx, bKey)
		})},
		{name: "purge b's record", subject: kvSubject(bucketName, bKey), do: onMesh(func(ctx context.Context, kv jetstream.KeyValue) error {
			return kv.Purge(ctx, bKey)
		})},
		{name: "claim another prefix", subject: kvSubject(bucketName, peer.Key(free)), do: onMesh(func(ctx context.Context, kv jetstream.KeyValue) error {
			_, _, err := bucket.Claim(ctx, kv, elsewhere, nil)
			return err
		})},
		{name: "revoke b's key", subject: kvSubject(bucketName, peer.RevokedKey(b.PublicKey)), do: onMesh(func(ctx context.Context, kv jetstream.KeyValue) error {
			_, err := kv.Create(ctx, peer.RevokedKey(b.PublicKey), revocation)
			return err
		})},
		{name: "write b's heartbeat", subject: kvSubject(live, bucket.HeartbeatKey(b.Prefix())), do: func(ctx context.Context, c *bucket.Conn) error {
			kv, err := bucket.OpenLiveBucket(ctx, c.JS, bucketName, false, 0)
			if err != nil {
				return err
			}
			return bucket.PutHeartbeat(ctx, kv, b.Prefix(), bucket.Heartbeat{PublicKey: a.PublicKey.String(), Name: b.Name, At: time.Now()})
		}},
		{name: "create the bucket", subject: api + "STREAM.CREATE.KV_" + bucketName, do: func(ctx context.Context, c *bucket.Conn) error {
			_, err := c.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketName, History: 64})
			return err
		}},
		{name: "create the heartbeat bucket", subject: api + "STREAM.CREATE.KV_" + live, do: func(ctx context.Context, c *bucket.Conn) error {
			_, err := c.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: live, History: 64})
			return err
		}},
		{name: "change the bucket", subject: api + "STREAM.UPDATE.KV_" + bucketName, do: func(ctx context.Context, c *bucket.Conn) error {
			_, err := c.JS.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketName, History: 64})
			return err
		}},
		{name: "delete the bucket", subject: api + "STREAM.DELETE.KV_" + bucketName, do: deleteBucket(bucketName)},
		{name: "delete the heartbeat bucket", subject: api + "STREAM.DELETE.KV_" + live, do: deleteBucket(live)},
		{name: "purge the bucket", subject: api + "STREAM.PURGE.KV_" + bucketName, do: purgeStream(bucketName)},
		{name: "purge the heartbeat bucket", subject: api + "STREAM.PURGE.KV_" + live, do: purgeStream(live)},
		{name: "delete b's record from the stream", subject: api + "STREAM.MSG.DELETE.KV_" + bucketName, do: func(ctx context.Context, c *bucket.Conn) error {
			s, err := c.JS.Stream(ctx, "KV_"+bucketName)
			if err != nil {
				return err
			}
			m, err := s.GetLastMsgForSubject(ctx, "$KV."+bucketName+"."+bKey)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, m.Sequence)
		}},
		{name: "read b's replies", subject: `"` + bInbox + `.>"`, async: true, do: subscribe(bInbox + ".>")},
		{name: "read every host's replies on _INBOX", subject: `"_INBOX.>"`, async: true, do: subscribe("_INBOX.>")},
	}
}

func onMesh(f func(context.Context, jetstream.KeyValue) error) func(context.Context, *bucket.Conn) error {
	return func(ctx context.Context, c *bucket.Conn) error {
		kv, err := bucket.OpenBucket(ctx, c.JS, bucketName, false, 0)
		if err != nil {
			return err
		}
		return f(ctx, kv)
	}
}

func deleteBucket(name string) func(context.Context, *bucket.Conn) error {
	return func(ctx context.Context, c *bucket.Conn) error { return c.JS.DeleteKeyValue(ctx, name) }
}

func purgeStream(name string) func(context.Context, *bucket.Conn) error {
	return func(ctx context.Context, c *bucket.Conn) error {
		s, err := c.JS.Stream(ctx, "KV_"+name)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	}
}

func subscribe(subject string) func(context.Context, *bucket.Conn) error {
	return func(_ context.Context, c *bucket.Conn) error {
		_, err := c.NC.SubscribeSync(subject)
		return err
	}
}

// checkAttacks runs every attack with a's enrolled credentials, each on a
// connection of its own (a connection's last error is the attack's), and
// then checks that b's record, b's heartbeat, the buckets and the mesh are
// as they were.
func (w *enrollWorld) checkAttacks(t *testing.T, a, b *harness.Host, hosts []*harness.Host) {
	t.Helper()
	aSettings := w.natsSettings(t, a.Name)
	bInbox := w.readConfig(b.Name).NATSInboxPrefix
	before := w.snapshot(t, b)
	free := freeAddress(t, w.m, hosts)
	for _, at := range attacks(a, b, bInbox, netip.PrefixFrom(free, 48).Masked()) {
		t.Run(strings.ReplaceAll(at.name, " ", "_"), func(t *testing.T) { runAttack(t, aSettings, at) })
	}
	if err := w.m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
	if err := harness.CheckMesh(hosts); err != nil {
		t.Fatalf("the attacks changed the mesh: %v", err)
	}
	after := w.snapshot(t, b)
	if after.record != before.record || after.revision != before.revision || after.revoked || after.streamsCreated != before.streamsCreated {
		t.Errorf("after the attacks: %+v, want %+v", after, before)
	}
	if !strings.Contains(after.heartbeat, b.PublicKey.String()) {
		t.Errorf("b's heartbeat after the attacks: %s, want b's key", after.heartbeat)
	}
}

func runAttack(t *testing.T, s config.NATS, at attack) {
	conn, err := bucket.Dial(s, bucket.Client{Name: "attacker", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), refusedAttackTimeout)
	defer cancel()
	err = at.do(ctx, conn)
	if err == nil && !at.async {
		t.Errorf("%s: succeeded", at.name)
	}
	// The server answers a refused publish or subscription with an -ERR
	// naming the subject; a refused request is never answered at all.
	testkit.Eventually(t, deniedWriteTimeout, "the server to refuse "+at.subject, func() error {
		last := conn.NC.LastError()
		if last == nil || !errors.Is(last, nats.ErrPermissionViolation) || !strings.Contains(last.Error(), at.subject) {
			return fmt.Errorf("last error %v (the call returned %v)", last, err)
		}
		return nil
	})
	t.Logf("%s: %v", at.name, conn.NC.LastError())
}

// natsSettings are the NATS settings of the config enroll wrote for name.
func (w *enrollWorld) natsSettings(t *testing.T, name string) config.NATS {
	t.Helper()
	s, err := config.Load(filepath.Join(w.out, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return s.NATS
}

// hostState is what an attack on a host must not change, read as the
// operator.
type hostState struct {
	record         string
	revision       uint64
	revoked        bool
	heartbeat      string
	streamsCreated string
}

func (w *enrollWorld) snapshot(t *testing.T, h *harness.Host) hostState {
	t.Helper()
	js := w.adminJetStream()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, peer.Key(h.Prefix()))
	if err != nil {
		t.Fatalf("%s's record: %v", h.Name, err)
	}
	var st hostState
	st.record, st.revision = string(bytes.TrimSpace(e.Value())), e.Revision()
	_, err = kv.Get(ctx, peer.RevokedKey(h.PublicKey))
	st.revoked = !errors.Is(err, jetstream.ErrKeyNotFound)
	live, err := js.KeyValue(ctx, bucket.LiveBucket(bucketName))
	if err != nil {
		t.Fatal(err)
	}
	if hb, err := live.Get(ctx, bucket.HeartbeatKey(h.Prefix())); err == nil {
		st.heartbeat = string(hb.Value())
	}
	for _, b := range []string{bucketName, bucket.LiveBucket(bucketName)} {
		s, err := js.Stream(ctx, "KV_"+b)
		if err != nil {
			t.Fatalf("bucket %s: %v", b, err)
		}
		st.streamsCreated += s.CachedInfo().Created.String() + " "
	}
	return st
}

// checkAdminAsHost runs ikto-admin evict of victim with an enrolled host's
// config: it must fail saying it lacks permission, and change nothing.
func (w *enrollWorld) checkAdminAsHost(t *testing.T, victim *harness.Host, hosts []*harness.Host) {
	t.Helper()
	code, stdout, stderr := runAdmin(t, w.m.bins, "-c", filepath.Join(w.out, "alpha.json"), "evict", victim.PrivateAddress.String())
	if code == 0 || !strings.Contains(strings.ToLower(stderr), "permission") {
		t.Fatalf("ikto-admin evict with alpha's credentials: exit %d, want a refusal naming permissions:\n%s%s", code, stdout, stderr)
	}
	if err := w.m.exitedEarly(hosts); err != nil {
		t.Fatal(err)
	}
	if err := harness.CheckMesh(hosts); err != nil {
		t.Errorf("after evict with alpha's credentials: %v", err)
	}
}
