package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
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

// ownKeyAttack is a message a compromised host publishes on a subject its
// user may write — its own record or heartbeat — with headers crafted to
// reach beyond it. The server's permissions cannot see headers; the
// stream's settings and the agents' rules must make each of them refused,
// or harmless to every other host.
type ownKeyAttack struct {
	name   string
	live   bool // on its heartbeat key instead of its record
	header map[string]string
	// refused: every server the docs promise must refuse it (the stream
	// refuses rollups). Headers a server does not know are stored as a
	// plain message on the host's own key: that is allowed, as long as it
	// touches nothing else.
	refused bool
}

func ownKeyAttacks(b *harness.Host, at time.Time) []ownKeyAttack {
	bSubject := "$KV." + bucketName + "." + peer.Key(b.Prefix())
	return []ownKeyAttack{
		{name: "rollup all on its record", header: map[string]string{"Nats-Rollup": "all"}, refused: true},
		{name: "rollup sub on its record", header: map[string]string{"Nats-Rollup": "sub"}, refused: true},
		{name: "purge of its record (KV purge)", header: map[string]string{"KV-Operation": "PURGE", "Nats-Rollup": "sub"}, refused: true},
		{name: "rollup all on its heartbeat", live: true, header: map[string]string{"Nats-Rollup": "all"}, refused: true},
		// Headers of newer servers, each behind a stream setting ikto's
		// buckets leave off.
		{name: "per-message TTL", header: map[string]string{"Nats-TTL": "1s"}},
		{name: "scheduled message to b's record", header: map[string]string{
			"Nats-Schedule": "@at " + at.UTC().Format(time.RFC3339), "Nats-Schedule-Target": bSubject}},
		{name: "atomic batch", header: map[string]string{"Nats-Batch-Id": "x", "Nats-Batch-Sequence": "1", "Nats-Batch-Commit": "1"}},
		{name: "counter", header: map[string]string{"Nats-Counter-Incr": "+1"}},
		// Headers every server knows, aimed at b's record.
		{name: "expected sequence of b's record", header: map[string]string{
			"Nats-Expected-Last-Subject-Sequence": "0", "Nats-Expected-Last-Subject-Sequence-Subject": bSubject}},
		{name: "b's message id", header: map[string]string{"Nats-Msg-Id": "ikto-" + b.Name}},
		{name: "delete marker at its own record", header: map[string]string{"KV-Operation": "DEL"}},
	}
}

// checkOwnKeyAttacks takes host a as an attacker would (its agent stopped,
// its credentials in hostile hands) and tries, on a's own keys, everything
// that could reach b: header tricks, a consumer delivering to b's inbox,
// and a copy of b's record at a's own prefix followed by b's restart. None
// may change b's or c's record, heartbeat or revocation state, or what c
// routes to b. The operator then removes the copy with evict --keep-key.
func (w *enrollWorld) checkOwnKeyAttacks(t *testing.T, a, b, c *harness.Host, bCfg config.Config) {
	t.Helper()
	if err := w.m.agents[a.Name].Stop(agentStopTimeout); err != nil {
		t.Fatal(err)
	}
	s := w.natsSettings(t, a.Name)
	conn, err := bucket.Dial(s, bucket.Client{Name: "attacker", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rest := []*harness.Host{b, c}
	before := map[string]hostState{b.Name: w.snapshot(t, b), c.Name: w.snapshot(t, c)}
	unchanged := func(what string) {
		t.Helper()
		for _, h := range rest {
			after := w.snapshot(t, h)
			was := before[h.Name]
			if after.record != was.record || after.revision != was.revision || after.revoked || after.streamsCreated != was.streamsCreated {
				t.Errorf("after %s, %s: %+v, want %+v", what, h.Name, after, was)
			}
			if !strings.Contains(after.heartbeat, h.PublicKey.String()) {
				t.Errorf("after %s, %s's heartbeat: %s", what, h.Name, after.heartbeat)
			}
		}
		w.checkRoutes(t, rest)
	}

	scheduled := time.Now().Add(time.Second)
	for _, at := range ownKeyAttacks(b, scheduled) {
		t.Run(strings.ReplaceAll(at.name, " ", "_"), func(t *testing.T) {
			err := publishOnOwnKey(conn, a, at)
			switch {
			case at.refused && err == nil:
				t.Errorf("%s: stored, want refused", at.name)
			case err != nil:
				t.Logf("%s: refused: %v", at.name, err)
			default:
				t.Logf("%s: stored at %s's own key", at.name, a.Name)
			}
		})
	}
	time.Sleep(time.Until(scheduled.Add(time.Second))) // past the scheduled message's time
	unchanged("the header tricks")

	w.checkForeignDelivery(t, conn, b, bCfg)
	unchanged("a consumer delivering to b's inbox")

	w.checkConsumerFlood(t, conn)
	unchanged("a flood of consumers")

	w.checkCopyAtOwnPrefix(t, conn, a, b, c, bCfg)
}

// publishOnOwnKey publishes at's message on a's own record or heartbeat
// key, as a's user, and returns the stream's answer.
func publishOnOwnKey(conn *bucket.Conn, a *harness.Host, at ownKeyAttack) error {
	subject := "$KV." + bucketName + "." + peer.Key(a.Prefix())
	if at.live {
		subject = "$KV." + bucket.LiveBucket(bucketName) + "." + bucket.HeartbeatKey(a.Prefix())
	}
	m := nats.NewMsg(subject)
	m.Data = []byte(`{"name":"intruder"}`)
	for k, v := range at.header {
		m.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), refusedAttackTimeout)
	defer cancel()
	_, err := conn.JS.PublishMsg(ctx, m)
	return err
}

// checkRoutes checks that every host of hosts routes every other one of
// hosts as it should and that they ping each other: other peers (a's,
// held while its record is garbage) may be there too.
func (w *enrollWorld) checkRoutes(t *testing.T, hosts []*harness.Host) {
	t.Helper()
	testkit.Eventually(t, convergeTimeout, "the hosts to route each other", func() error {
		if err := w.m.exitedEarly(hosts); err != nil {
			return err
		}
		for _, h := range hosts {
			got, err := h.DeviceView()
			if err != nil {
				return err
			}
			for _, p := range hosts {
				if p != h && got[p.PublicKey.String()] != p.ExpectedView() {
					return fmt.Errorf("%s routes %s as %+v, want %+v", h.Name, p.Name, got[p.PublicKey.String()], p.ExpectedView())
				}
			}
		}
		return nil
	})
	w.m.pingAll(hosts)
}

// checkForeignDelivery makes a consumer whose deliver subject is in b's
// inbox: permissions cannot stop it (docs/securing-membership.md), so the
// server publishes a's messages there. b's agent must ignore them.
func (w *enrollWorld) checkForeignDelivery(t *testing.T, conn *bucket.Conn, b *harness.Host, bCfg config.Config) {
	t.Helper()
	inbox := bCfg.NATSInboxPrefix
	if inbox == "" {
		inbox = nats.InboxPrefix[:len(nats.InboxPrefix)-1] // "_INBOX"
	}
	stream := "KV_" + bucketName
	name := "intruder"
	filter := "$KV." + bucketName + ".>"
	req, _ := json.Marshal(map[string]any{"stream_name": stream, "config": map[string]any{
		"name": name, "deliver_subject": inbox + ".intruder", "deliver_policy": "all",
		"ack_policy": "none", "filter_subject": filter,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := conn.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE."+stream+"."+name+"."+filter, req)
	if err != nil {
		t.Logf("consumer delivering to %s's inbox: not made: %v", b.Name, err)
		return
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	_ = json.Unmarshal(msg.Data, &resp)
	if resp.Error != nil {
		t.Logf("consumer delivering to %s's inbox: refused: %s", b.Name, resp.Error.Description)
		return
	}
	t.Logf("consumer delivering to %s's inbox made (a documented limit); the server delivers the bucket there", b.Name)
	time.Sleep(time.Second) // let it deliver
	js := w.adminJetStream()
	if err := js.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("delete the intruder's consumer: %v", err)
	}
}

// checkConsumerFlood makes durable consumers on the bucket's stream with
// the attacker's user until the server refuses: the account's limit
// (Sizing.ConsumersPerStream) bounds them, and with them the disk and memory
// a host can take. Hosts that run keep their watches; one that starts while
// the stream is full cannot make its own, so the operator removes the
// flood (ikto never makes durable consumers), as docs/securing-membership.md
// says, and the victim's restart that follows proves the stream usable.
func (w *enrollWorld) checkConsumerFlood(t *testing.T, conn *bucket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := "KV_" + bucketName
	limit := int(w.sizing.ConsumersPerStream())
	made := 0
	var err error
	for ; made <= limit; made++ {
		_, err = conn.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("flood%d", made), AckPolicy: jetstream.AckNonePolicy,
		})
		if err != nil {
			break
		}
	}
	switch {
	case err == nil:
		t.Errorf("%d durable consumers made; the account's limit is %d per stream", made, limit)
	case !errors.Is(err, jetstream.ErrMaximumConsumersLimit):
		t.Errorf("consumer %d refused with %v, want the account's consumer limit", made+1, err)
	}
	t.Logf("consumer flood: %d durable consumers made before the server refused (limit %d per stream, the agents' watches among them): %v",
		made, limit, err)
	js := w.adminJetStream()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		if strings.HasPrefix(name, "flood") {
			if err := st.DeleteConsumer(ctx, name); err != nil {
				t.Fatalf("operator: delete consumer %s: %v", name, err)
			}
			removed++
		}
	}
	if err := names.Err(); err != nil {
		t.Fatalf("operator: list consumers: %v", err)
	}
	if removed != made {
		t.Errorf("the operator removed %d flood consumers, the attacker made %d", removed, made)
	}
}

// checkCopyAtOwnPrefix writes, at a's own prefix, b's record with a's prefix
// as its allowed_ip, then restarts b. b's restart must not hand its key to
// the copy: c routes b's key at b's prefix at every read, and b and c ping
// each other. evict of a's prefix refuses to revoke b's key until told;
// --keep-key removes the copy and leaves b's key valid.
func (w *enrollWorld) checkCopyAtOwnPrefix(t *testing.T, conn *bucket.Conn, a, b, c *harness.Host, bCfg config.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	kv, err := bucket.OpenBucket(ctx, conn.JS, bucketName, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	copied := recordCopiedTo(ctx, t, kv, b, a)
	if _, err := kv.Put(ctx, peer.Key(a.Prefix()), copied.Encode()); err != nil {
		t.Fatalf("write a copy of %s's record at %s's own key: %v", b.Name, a.Name, err)
	}

	if err := w.m.agents[b.Name].Stop(agentStopTimeout); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	w.m.startWith(b, bCfg)
	// Watch c's device through b's restart and a while after: b's key must
	// never be routed at a's prefix. (Pings across the restart of an
	// embedded device cannot be counted: the device goes with the agent.)
	var healed time.Duration
	deadline := time.Now().Add(testkit.Scaled(10 * time.Second))
	for time.Now().Before(deadline) {
		got, err := c.DeviceView()
		if err != nil {
			t.Fatal(err)
		}
		v := got[b.PublicKey.String()]
		if v.AllowedIPs == a.Prefix().String() {
			t.Fatalf("%s routes %s's key at %s's prefix %s after %s's restart", c.Name, b.Name, a.Name, a.Prefix(), b.Name)
		}
		if healed == 0 && v == b.ExpectedView() {
			if _, err := c.Ping(context.Background(), b.PrivateAddress); err == nil {
				healed = time.Since(restarted)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s restarted beside a copy of its key at %s's prefix: %s answered %s %s after the restart",
		b.Name, a.Name, b.Name, c.Name, healed.Round(time.Millisecond))
	if healed == 0 {
		t.Errorf("%s never answered %s after its restart", b.Name, c.Name)
	}
	w.checkRoutes(t, []*harness.Host{b, c})

	// The operator's obvious remedy must not punish the victim.
	code, stdout, stderr := w.admin("evict", a.PrivateAddress.String(), "--dry-run")
	if code != 1 || !strings.Contains(stderr, "--keep-key") {
		t.Errorf("evict --dry-run of the copy's prefix: exit %d, want 1 offering --keep-key\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = w.admin("evict", a.PrivateAddress.String(), "--keep-key")
	if code != 0 {
		t.Fatalf("evict --keep-key: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("evict --keep-key:\n%s", stdout)
	if st := w.snapshot(t, b); st.revoked {
		t.Errorf("%s's key revoked by evict --keep-key", b.Name)
	}
	if _, err := runAdminOK(t, w, "list"); err != nil {
		t.Error(err)
	}
}

// runAdminOK runs ikto-admin as the operator and fails on a non-zero exit.
func runAdminOK(t *testing.T, w *enrollWorld, args ...string) (string, error) {
	t.Helper()
	code, stdout, stderr := w.admin(args...)
	if code != 0 {
		return stdout, fmt.Errorf("ikto-admin %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout, nil
}

// recordCopiedTo is from's record in kv with to's prefix as its allowed_ip:
// what a writer plants at to's key to copy from's key there.
func recordCopiedTo(ctx context.Context, t *testing.T, kv jetstream.KeyValue, from, to *harness.Host) peer.Record {
	t.Helper()
	e, err := kv.Get(ctx, peer.Key(from.Prefix()))
	if err != nil {
		t.Fatalf("%s's record: %v", from.Name, err)
	}
	var r peer.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatalf("%s's record: %v", from.Name, err)
	}
	r.AllowedIP = to.Prefix().String()
	return r
}
