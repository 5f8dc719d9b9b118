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
	"strings"
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
	// followed: agents follow it, so its stream republishes what it
	// stores (FollowSubject).
	followed bool
}

var (
	meshKind = kind{what: "bucket", description: "ikto mesh: peer claims and revocations", followed: true}
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
	var rp *jetstream.RePublish
	if k.followed {
		rp = rePublish(name)
	}
	return jetstream.StreamConfig{
		RePublish:         rp,
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

// ErrNotRepublished is matched by Problems' finding that the bucket's
// stream does not republish what it stores: each agent then follows it
// with a consumer of its own, and a server allows 1,000 per stream unless
// configured otherwise.
var ErrNotRepublished = errors.New("bucket not republished")

// Problems says what is wrong with the settings of a bucket's stream, one
// error per finding naming the fix; none for a bucket as ikto makes it. A
// bucket made by ikto 0.3.0 or by another tool allows rollups; one
// made before 0.4 does not republish.
func Problems(cfg jetstream.StreamConfig) []error {
	if strings.HasSuffix(cfg.Name, liveSuffix) {
		return problems(cfg, liveKind)
	}
	return problems(cfg, meshKind)
}

func problems(cfg jetstream.StreamConfig, k kind) []error {
	var out []error
	if cfg.AllowRollup {
		out = append(out, fmt.Errorf("%w: stream %s allows Nats-Rollup headers, so one message from any host can empty it; run ikto-admin init-bucket with operator credentials to refuse them",
			ErrUnsafeBucket, cfg.Name))
	}
	if k.followed && !republishes(cfg, strings.TrimPrefix(cfg.Name, "KV_")) {
		out = append(out, fmt.Errorf("%w: stream %s does not republish to %s, so every agent follows it with a consumer (1,000 per stream unless the server is configured otherwise); run ikto-admin init-bucket with operator credentials (nats-server 2.10 or newer can add it to an existing stream)",
			ErrNotRepublished, cfg.Name, FollowSubject(strings.TrimPrefix(cfg.Name, "KV_"))))
	}
	return out
}

// jsErrRePublishUnchangeable is nats-server 2.9's "stream configuration
// update can not change RePublish".
const jsErrRePublishUnchangeable jetstream.ErrorCode = 10052

// upgrade brings the stream of bucket name to ikto's settings where they
// differ (an update of its configuration, which needs operator
// credentials): it refuses Nats-Rollup headers, and a followed bucket
// republishes what it stores. It reports whether it changed anything. A
// server that cannot add republishing to an existing stream (2.9) still
// gets the rest; the bucket is then followed the old way.
func upgrade(ctx context.Context, js jetstream.JetStream, name string, k kind) (bool, error) {
	st, err := js.Stream(ctx, streamName(name))
	if err != nil {
		return false, fmt.Errorf("stream of %s: %w", name, err)
	}
	cfg := st.CachedInfo().Config
	want := cfg
	want.AllowRollup = false
	if k.followed && !republishes(cfg, name) {
		want.RePublish = rePublish(name)
	}
	if want.AllowRollup == cfg.AllowRollup && want.RePublish == cfg.RePublish {
		return false, nil
	}
	_, err = js.UpdateStream(ctx, want)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrRePublishUnchangeable {
		want.RePublish = cfg.RePublish
		if !cfg.AllowRollup {
			return false, nil
		}
		_, err = js.UpdateStream(ctx, want)
	}
	if err != nil {
		return false, fmt.Errorf("update the settings of stream %s: %w", cfg.Name, err)
	}
	return true, nil
}
