package enroll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// TestLimitsBoundAHostOnAnEmbeddedServer runs the current nats-server with
// an account sized for one host, and holds an enrolled host's user to each
// limit: the consumers it can make on the bucket's stream, the connections
// of the account, its subscriptions and the size of what it publishes. The
// account itself gets no memory stream, no fifth stream, and no more disk
// than it was given. Debian's 2.9 is covered by the integration module's
// TestInitOperator.
func TestLimitsBoundAHostOnAnEmbeddedServer(t *testing.T) {
	sizing := Sizing{MaxHosts: 1}
	auth, s, adminCreds := startAuthority(t, sizing)
	_, adminJS := natstest.Connect(t, s.URL(), nats.UserCredentials(adminCreds))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := bucket.OpenBucket(ctx, adminJS, "ikto-mesh", true, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.OpenLiveBucket(ctx, adminJS, "ikto-mesh", true, 0); err != nil {
		t.Fatal(err)
	}
	host, inbox := hostCreds(t, auth, "host-a")
	hostOpts := []nats.Option{nats.UserCredentials(host), nats.CustomInboxPrefix(inbox), nats.NoReconnect()}
	connect := func(opts ...nats.Option) (*nats.Conn, error) {
		return nats.Connect(s.URL(), slices.Concat(hostOpts, opts)...)
	}

	t.Run("consumers", func(t *testing.T) {
		_, js := natstest.Connect(t, s.URL(), hostOpts...)
		var err error
		made := 0
		for ; made <= int(sizing.ConsumersPerStream()); made++ {
			_, err = js.CreateOrUpdateConsumer(ctx, "KV_ikto-mesh", jetstream.ConsumerConfig{Durable: fmt.Sprintf("flood-%d", made)})
			if err != nil {
				break
			}
		}
		if !errors.Is(err, jetstream.ErrMaximumConsumersLimit) || made != int(sizing.ConsumersPerStream()) {
			t.Fatalf("the host made %d consumers, then %v; want %d, then ErrMaximumConsumersLimit", made, err, sizing.ConsumersPerStream())
		}
		// The denial of service the limit leaves: no room for a watch.
		kv, err := js.KeyValue(ctx, "ikto-mesh")
		if err != nil {
			t.Fatal(err)
		}
		if w, err := kv.WatchAll(ctx); err == nil {
			_ = w.Stop()
			t.Error("a watch was made with the stream's consumers used up")
		}
		// The operator's remedy: delete them.
		for i := range made {
			if err := adminJS.DeleteConsumer(ctx, "KV_ikto-mesh", fmt.Sprintf("flood-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatalf("watch after the flood was deleted: %v", err)
		}
		_ = w.Stop()
	})

	t.Run("payload", func(t *testing.T) {
		_, js := natstest.Connect(t, s.URL(), hostOpts...)
		kv, err := js.KeyValue(ctx, "ikto-mesh")
		if err != nil {
			t.Fatal(err)
		}
		own := peer.Key(specPrefix)
		if _, err := kv.Put(ctx, own, bytes.Repeat([]byte("x"), HostMaxPayload)); err != nil {
			t.Fatalf("put of HostMaxPayload bytes: %v", err)
		}
		// The server tells the client the user's limit, so nats.go refuses
		// before sending; a client that sends anyway is disconnected.
		if _, err := kv.Put(ctx, own, bytes.Repeat([]byte("y"), HostMaxPayload+1)); !errors.Is(err, nats.ErrMaxPayload) {
			t.Errorf("put of HostMaxPayload+1 bytes: %v, want ErrMaxPayload", err)
		}
		e, err := kv.Get(ctx, own)
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Value()) != HostMaxPayload {
			t.Errorf("after the refused put the key holds %d bytes, want %d", len(e.Value()), HostMaxPayload)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		refused := make(chan error, 1)
		nc, err := connect(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case refused <- err:
			default:
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		subscribe := func(n int) {
			t.Helper()
			for range n {
				if _, err := nc.SubscribeSync(inbox + ".sub." + nats.NewInbox()); err != nil {
					t.Fatal(err)
				}
			}
			// The server answers the PING after it has refused any of them.
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		subscribe(HostMaxSubscriptions)
		select {
		case err := <-refused:
			t.Fatalf("%d subscriptions: %v", HostMaxSubscriptions, err)
		case <-time.After(100 * time.Millisecond):
		}
		subscribe(1)
		select {
		case err := <-refused:
			if !errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
				t.Fatalf("subscription %d refused with %v, want ErrMaxSubscriptionsExceeded", HostMaxSubscriptions+1, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d subscriptions, none refused", HostMaxSubscriptions+1)
		}
	})

	t.Run("connections", func(t *testing.T) {
		// The admin connection is one of the account's.
		open := 1
		for ; open <= int(sizing.Connections()); open++ {
			nc, err := connect()
			if err != nil {
				if !strings.Contains(err.Error(), "maximum account active connections") || open != int(sizing.Connections()) {
					t.Fatalf("the account had %d connections, then %v; want %d, then the account limit", open, err, sizing.Connections())
				}
				return
			}
			defer nc.Close()
		}
		t.Fatalf("the account has %d connections, and no limit", open)
	})

	t.Run("account streams and storage", func(t *testing.T) {
		stream := func(name string, storage jetstream.StorageType) error {
			_, err := adminJS.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: storage})
			return err
		}
		if err := stream("memory", jetstream.MemoryStorage); err == nil {
			t.Error("a memory stream was made")
		}
		for _, name := range []string{"third", "fourth"} {
			if err := stream(name, jetstream.FileStorage); err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
		}
		// nats-server's "maximum number of streams reached"; nats.go has
		// no constant for it.
		const maximumStreams jetstream.ErrorCode = 10027
		var apiErr *jetstream.APIError
		if err := stream("fifth", jetstream.FileStorage); !errors.As(err, &apiErr) || apiErr.ErrorCode != maximumStreams {
			t.Errorf("a fifth stream: %v, want error %d (maximum number of streams)", err, maximumStreams)
		}
		value := bytes.Repeat([]byte("x"), 1024)
		var stored int64
		for stored <= sizing.DiskBytes() {
			_, err := adminJS.Publish(ctx, "third.x", value)
			if err != nil {
				if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Description, "resource") || stored < sizing.DiskBytes()*3/4 {
					t.Errorf("refused after %d bytes with %v; want the account's storage limit near %d", stored, err, sizing.DiskBytes())
				}
				return
			}
			stored += int64(len(value))
		}
		t.Errorf("the account stored %d bytes, its limit %d", stored, sizing.DiskBytes())
	})
}

// hostCreds writes the .creds of a new enrolled user of auth's account for
// the host of specPrefix, and returns it with the host's inbox prefix.
func hostCreds(t *testing.T, auth *Authority, name string) (path, inbox string) {
	t.Helper()
	user, userKey, subjects := newHostUser(t)
	token, err := Sign(auth.Account, User{Name: name, Key: userKey, Subjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := Creds(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeCreds(t, name, creds), InboxPrefix(userKey)
}
