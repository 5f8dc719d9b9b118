package bucket

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natsserver"
	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
	"github.com/ikto-mesh/ikto/pkg/config"
)

func TestOpenBucketReplicasOnASingleServer(t *testing.T) {
	s := natstest.Start(t)
	_, js := natstest.Connect(t, s.URL())
	_, err := OpenBucket(context.Background(), js, "ikto-test", true, 3)
	if !errors.Is(err, ErrReplicasNotSupported) {
		t.Fatalf("OpenBucket with 3 replicas on one server = %v, want ErrReplicasNotSupported", err)
	}
	for _, want := range []string{"ikto-test", "nats_kv_replicas 3", "nats_url"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// One replica is what a single server can hold.
	if _, err := OpenBucket(context.Background(), js, "ikto-test", true, 1); err != nil {
		t.Fatal(err)
	}
}

func TestIsWrongRevision(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, true},
		// What a replicated (R3) bucket answers to a lost compare-and-set.
		{fmt.Errorf("update: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{errors.New("wrong last sequence"), false},
		{nil, false},
	} {
		if got := isWrongRevision(tc.err); got != tc.want {
			t.Errorf("isWrongRevision(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// Credentials of an account without JetStream get an error that says so and
// names the fix, not a timeout or "no responders".
func TestNoJetStreamIsNamed(t *testing.T) {
	s := natstest.StartWith(t, natsserver.Options{Config: `accounts {
  MESH: { jetstream: enabled, users: [{user: mesh, password: mesh}] }
  PLAIN: { users: [{user: plain, password: plain}] }
}
`})
	url := strings.Replace(s.URL(), "nats://", "nats://plain:plain@", 1)
	conn, err := Dial(config.NATS{URLs: []string{url}, Bucket: "ikto-test"}, Client{Name: "test", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = conn.Open(ctx, true)
	if !errors.Is(err, ErrNoJetStream) {
		t.Fatalf("Open with an account without JetStream = %v, want ErrNoJetStream", err)
	}
	for _, want := range []string{"JetStream", "account", "jetstream {}"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
