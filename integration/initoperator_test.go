package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/integration/harness/harnesstest"
	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// initOperatorHosts is --max-hosts for TestInitOperator: small, so that a
// host can reach the account's limits in a moment.
const initOperatorHosts = 1

// TestInitOperator follows docs/securing-membership.md's steps with its own
// commands (init-operator, init-bucket, enroll) and those `ikto-admin
// init-operator` prints, on
// Debian's nats-server 2.9 and on the embedded current release: the server
// configuration gets the printed include line, the server starts with it,
// and init-operator's admin.creds make the buckets. The account has the
// limits of --max-hosts, and a host enrolled with ikto-admin enroll is held
// to them: its consumers on the bucket's stream, its subscriptions and the
// size of what it publishes. The servers listen on 127.0.0.1 only.
func TestInitOperator(t *testing.T) {
	bins := harnesstest.Binaries(t, harness.AdminBinary)
	forEachServer(t, func(t *testing.T, server string) { testInitOperator(t, bins, server) })
}

func testInitOperator(t *testing.T, bins *harness.Binaries, kind string) {
	// The server's configuration and the operator's files, as on a server:
	// SERVER/nats-server.conf and SERVER/ikto/.
	serverDir := t.TempDir()
	serverConf := filepath.Join(serverDir, "nats-server.conf")
	opDir := filepath.Join(serverDir, "ikto")
	doc := readRepoFile(t, "docs/securing-membership.md")
	paths := map[string]string{
		"/etc/nats/ikto": opDir, "/etc/nats-server.conf": serverConf, "/var/lib/nats/jwt": t.TempDir(),
		"1000": strconv.Itoa(initOperatorHosts), // the account's limits are checked by filling them
	}
	code, stdout, stderr := runAdmin(t, bins, docArgs(t, doc, "init-operator", []string{"--max-hosts", "--server-config"}, paths)...)
	if code != 0 {
		t.Fatalf("init-operator: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("init-operator:\n%s", stdout)
	include := printedInclude(t, stdout)

	var url string
	switch kind {
	case serverDebian:
		url = harnesstest.DebianNATS(t, netip.MustParseAddr("127.0.0.1"), serverDir, include).URL()
	case serverEmbedded:
		// The embedded server reads configuration text, not a file: it
		// includes the file the steps wrote, which nats-server parses
		// with include paths relative to that file's directory. The text
		// has no directory, so its own include is relative to ours.
		harnesstest.WriteFile(t, serverConf, []byte(include+"\n"), 0o600)
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(wd, serverConf)
		if err != nil {
			t.Fatal(err)
		}
		s, err := harness.StartConfNATS(natsserver.Options{StoreDir: t.TempDir()}, "include "+strconv.Quote(rel)+"\n")
		if err != nil {
			t.Fatalf("start the embedded nats-server with %s (%s): %v", serverConf, include, err)
		}
		t.Cleanup(func() { _ = s.Close() })
		url = s.URL()
	default:
		t.Fatalf("unknown server kind %q", kind)
	}

	admin := filepath.Join(opDir, "admin.creds")
	paths["nats://nats-1:4222"] = url
	if code, stdout, stderr := runAdmin(t, bins, docArgs(t, doc, "init-bucket", nil, paths)...); code != 0 {
		t.Fatalf("init-bucket with admin.creds: exit %d\n%s%s", code, stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sizing := enroll.Sizing{MaxHosts: initOperatorHosts}
	adminJS := checkAccountLimits(ctx, t, url, admin, sizing)

	out := t.TempDir()
	paths["./host-a"] = out
	code, stdout, stderr = runAdmin(t, bins, docArgs(t, doc, "enroll", nil, paths)...)
	if code != 0 {
		t.Fatalf("enroll: exit %d\n%s%s", code, stdout, stderr)
	}
	host, own := enrolledConnector(t, url, out, "host-a")
	checkHostConsumers(ctx, t, host, adminJS, sizing)
	checkHostPayload(ctx, t, host, adminJS, own)
	checkHostSubscriptions(t, host)
}

// printedInclude is the include line init-operator printed.
func printedInclude(t *testing.T, stdout string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*(include \S.*)$`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("init-operator printed no include line:\n%s", stdout)
	}
	return m[1]
}

// checkAccountLimits connects with the operator's admin.creds and checks
// that the server holds the account to sizing's JetStream limits.
func checkAccountLimits(ctx context.Context, t *testing.T, url, creds string, sizing enroll.Sizing) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserCredentials(creds))
	if err != nil {
		t.Fatalf("connect with admin.creds: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
	got := []int64{info.Limits.MaxMemory, info.Limits.MaxStore, int64(info.Limits.MaxStreams), int64(info.Limits.MaxConsumers)}
	want := []int64{sizing.MemoryBytes(), sizing.DiskBytes(), sizing.Streams(), sizing.ConsumersPerStream()}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("account limits (memory, disk, streams, consumers) = %v, want %v", got, want)
	}
	if info.Streams != 2 {
		t.Errorf("the account has %d streams after init-bucket, want 2", info.Streams)
	}
	return js
}

// hostConnector connects as an enrolled host, with its creds and inbox
// prefix and no reconnects.
type hostConnector func(opts ...nats.Option) (*nats.Conn, jetstream.JetStream)

// enrolledConnector reads the config and creds enroll wrote for name in
// dir; own is the key of the host's record.
func enrolledConnector(t *testing.T, url, dir, name string) (connect hostConnector, own string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	addr, err := netip.ParseAddr(cfg.PrivateAddress)
	if err != nil {
		t.Fatal(err)
	}
	own = peer.Key(netip.PrefixFrom(addr, cfg.SubnetPrefix))
	return func(opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		base := []nats.Option{nats.UserCredentials(cfg.NATSCreds), nats.CustomInboxPrefix(cfg.NATSInboxPrefix), nats.NoReconnect()}
		nc, err := nats.Connect(url, append(base, opts...)...)
		if err != nil {
			t.Fatalf("connect as %s: %v", name, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}, own
}

// checkHostConsumers: the host makes durable consumers on the bucket's
// stream until the server refuses, which it does at the account's limit.
// The operator deletes them.
func checkHostConsumers(ctx context.Context, t *testing.T, connect hostConnector, adminJS jetstream.JetStream, sizing enroll.Sizing) {
	t.Helper()
	_, js := connect()
	stream := "KV_" + bucketName
	made := 0
	var err error
	for ; made <= int(sizing.ConsumersPerStream()); made++ {
		if _, err = js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: fmt.Sprintf("flood-%d", made)}); err != nil {
			break
		}
	}
	if !errors.Is(err, jetstream.ErrMaximumConsumersLimit) || made != int(sizing.ConsumersPerStream()) {
		t.Errorf("the host made %d consumers, then %v; want %d, then the limit", made, err, sizing.ConsumersPerStream())
	}
	for i := range made {
		if err := adminJS.DeleteConsumer(ctx, stream, fmt.Sprintf("flood-%d", i)); err != nil {
			t.Fatalf("delete consumer flood-%d as the operator: %v", i, err)
		}
	}
}

// checkHostPayload: the host writes a record of enroll.HostMaxPayload
// bytes at its own key, but not one byte more: nats.go refuses it when the
// server told it the limit, the server when it did not.
func checkHostPayload(ctx context.Context, t *testing.T, connect hostConnector, adminJS jetstream.JetStream, own string) {
	t.Helper()
	_, js := connect()
	kv, err := js.KeyValue(ctx, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, own, bytes.Repeat([]byte("x"), enroll.HostMaxPayload)); err != nil {
		t.Fatalf("put of HostMaxPayload bytes at the host's own key: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := kv.Put(pctx, own, bytes.Repeat([]byte("y"), enroll.HostMaxPayload+1)); err == nil {
		t.Error("put of HostMaxPayload+1 bytes: no error")
	} else {
		t.Logf("put of HostMaxPayload+1 bytes: %v", err)
	}
	adminKV, err := adminJS.KeyValue(ctx, bucketName)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := adminKV.Get(ctx, own); err != nil {
		t.Fatal(err)
	} else if len(e.Value()) != enroll.HostMaxPayload {
		t.Errorf("the host's key holds %d bytes, want the %d of the put the server took", len(e.Value()), enroll.HostMaxPayload)
	}
}

// checkHostSubscriptions: the host's connection holds
// enroll.HostMaxSubscriptions subscriptions, and the server refuses one
// more.
func checkHostSubscriptions(t *testing.T, connect hostConnector) {
	t.Helper()
	refused := make(chan error, 1)
	nc, _ := connect(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case refused <- err:
		default:
		}
	}))
	subscribe := func(n int) {
		t.Helper()
		for range n {
			if _, err := nc.SubscribeSync(nc.NewRespInbox()); err != nil {
				t.Fatal(err)
			}
		}
		// The server answers the PING after it has refused any of them.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	subscribe(enroll.HostMaxSubscriptions)
	select {
	case err := <-refused:
		t.Fatalf("%d subscriptions: %v", enroll.HostMaxSubscriptions, err)
	case <-time.After(200 * time.Millisecond):
	}
	subscribe(1)
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
			t.Errorf("subscription %d refused with %v, want ErrMaxSubscriptionsExceeded", enroll.HostMaxSubscriptions+1, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%d subscriptions, none refused", enroll.HostMaxSubscriptions+1)
	}
}
