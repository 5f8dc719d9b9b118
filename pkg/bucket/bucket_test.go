package bucket

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/internal/testkit/natstest"
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
