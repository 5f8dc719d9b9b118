// Package bucket is everything ikto knows about NATS, for all three binaries:
// the connection (Options, Dial), opening or creating the mesh's bucket and
// its heartbeat bucket, claiming a prefix with compare-and-set after checking
// the key is not revoked (docs/contract.md §4), evicting, watching the bucket as
// "snapshot, then updates" across reconnects, and typed errors (ErrPermission,
// ErrAddressInUse, ErrRevoked, ErrBucketMissing, ...) that callers check with
// errors.Is instead of reading error text.
package bucket

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jsErrReplicasNotSupported is nats-server's "replicas > 1 not supported in
// non-clustered mode"; nats.go has no constant for it.
const jsErrReplicasNotSupported jetstream.ErrorCode = 10074

// jsErrStreamStoreFailed is nats-server's "error opening msg block file"
// and other failures to store a message (ErrStoreFailed).
const jsErrStreamStoreFailed jetstream.ErrorCode = 10077

// kind is one of ikto's two buckets: what messages call it and how it is
// made.
type kind struct {
	what        string
	description string
	maxAge      time.Duration
}

var (
	meshKind = kind{what: "bucket", description: "ikto mesh: peer claims and revocations"}
	liveKind = kind{what: "heartbeat bucket", description: "ikto mesh: agent heartbeats (liveness for ikto-admin list)",
		maxAge: HeartbeatMaxAge}
)

// OpenBucket binds to the bucket name, creating it with the given number of
// replicas (0 = 1) when it is missing and create is set. An existing bucket is
// used as it is, whatever its replicas (Problems says what is wrong with it).
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, create bool, replicas int) (jetstream.KeyValue, error) {
	return open(ctx, js, name, meshKind, create, replicas)
}

// OpenLiveBucket binds the heartbeat bucket of mainBucket, creating it when
// missing and create is set (History 1, MaxAge 24h). replicas 0 means 1.
func OpenLiveBucket(ctx context.Context, js jetstream.JetStream, mainBucket string, create bool, replicas int) (jetstream.KeyValue, error) {
	return open(ctx, js, LiveBucket(mainBucket), liveKind, create, replicas)
}

func open(ctx context.Context, js jetstream.JetStream, name string, k kind, create bool, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if errors.Is(err, nats.ErrNoResponders) {
		// Nothing answers the JetStream API at all.
		return nil, fmt.Errorf("open %s %s: %w (%w)", k.what, name, ErrNoJetStream, err)
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open %s %s: %w", k.what, name, err)
	}
	if !create {
		return nil, fmt.Errorf("open %s %s: %w", k.what, name, ErrBucketMissing)
	}
	if replicas == 0 {
		replicas = 1
	}
	_, err = js.CreateStream(ctx, streamConfig(name, k, replicas))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another agent created it between our two calls.
		return js.KeyValue(ctx, name)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrReplicasNotSupported {
		return nil, fmt.Errorf("create %s %s with nats_kv_replicas %d: %w; set nats_kv_replicas to 1, or list the cluster's servers in nats_url",
			k.what, name, replicas, ErrReplicasNotSupported)
	}
	if err != nil {
		// The bucket is still missing: say so as well as why, so that a host
		// whose credentials may not create it (an enrolled host) can tell
		// "wait for an operator" from any other failure.
		return nil, fmt.Errorf("create %s %s (replicas %d): %w: %w", k.what, name, replicas, ErrBucketMissing, err)
	}
	return js.KeyValue(ctx, name)
}

// streamConfig is the stream behind a bucket as nats.go's CreateKeyValue
// makes it (History 1), except that it refuses Nats-Rollup headers: a KV
// stream allows them by default, and one message with "Nats-Rollup: all" on
// a key a host may write removes every other message of the stream —
// every record, revocation and delete marker — with no watch event
// (docs/contract.md §4). ikto never purges a key, which is the one thing a
// KV needs rollups for.
func streamConfig(name string, k kind, replicas int) jetstream.StreamConfig {
	dupes := 2 * time.Minute // nats.go's duplicate window, bounded by MaxAge
	if k.maxAge > 0 && k.maxAge < dupes {
		dupes = k.maxAge
	}
	return jetstream.StreamConfig{
		Name:              streamName(name),
		Description:       k.description,
		Subjects:          []string{"$KV." + name + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		MaxAge:            k.maxAge,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       false,
		DenyDelete:        true,
		AllowDirect:       true,
		Duplicates:        dupes,
		Discard:           jetstream.DiscardNew,
	}
}

// ErrUnsafeBucket is matched by Problems' findings: a bucket whose settings
// let one host's credentials harm the others.
var ErrUnsafeBucket = errors.New("bucket settings let one host harm the others")

// Problems says what is wrong with the settings of a bucket's stream, one
// error per finding naming the fix; none for a bucket as ikto makes it. A
// bucket made by ikto before 0.5 or by another tool allows rollups.
func Problems(cfg jetstream.StreamConfig) []error {
	var out []error
	if cfg.AllowRollup {
		out = append(out, fmt.Errorf("%w: stream %s allows Nats-Rollup headers, so one message from any host can empty it; run ikto-admin init-bucket with operator credentials to refuse them",
			ErrUnsafeBucket, cfg.Name))
	}
	return out
}

// RefuseRollups makes the stream of bucket name refuse Nats-Rollup headers
// (an update of its configuration, which needs operator credentials). It
// reports whether it changed anything.
func RefuseRollups(ctx context.Context, js jetstream.JetStream, name string) (bool, error) {
	st, err := js.Stream(ctx, streamName(name))
	if err != nil {
		return false, fmt.Errorf("stream of %s: %w", name, err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowRollup {
		return false, nil
	}
	cfg.AllowRollup = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return false, fmt.Errorf("refuse rollups on stream %s: %w", cfg.Name, err)
	}
	return true, nil
}
