package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// agentStopTimeout bounds an agent's exit on SIGTERM.
const agentStopTimeout = 10 * time.Second

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
