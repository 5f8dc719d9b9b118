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

	"github.com/nats-io/nats.go/jetstream"
)

// jsErrReplicasNotSupported is nats-server's "replicas > 1 not supported in
// non-clustered mode"; nats.go has no constant for it.
const jsErrReplicasNotSupported jetstream.ErrorCode = 10074

// OpenBucket binds to the bucket name, creating it with the given number of
// replicas (0 = 1) when it is missing and create is set. An existing bucket is
// used as it is, whatever its replicas.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, create bool, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	if !create {
		return nil, fmt.Errorf("open bucket %s: %w", name, ErrBucketMissing)
	}
	if replicas == 0 {
		replicas = 1
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "ikto mesh: peer claims and revocations",
		History:     1,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another agent created it between our two calls.
		return js.KeyValue(ctx, name)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrReplicasNotSupported {
		return nil, fmt.Errorf("create bucket %s with nats_kv_replicas %d: %w; set nats_kv_replicas to 1, or list the cluster's servers in nats_url",
			name, replicas, ErrReplicasNotSupported)
	}
	if err != nil {
		// The bucket is still missing: say so as well as why, so that a host
		// whose credentials may not create it (an enrolled host) can tell
		// "wait for an operator" from any other failure.
		return nil, fmt.Errorf("create bucket %s (replicas %d): %w: %w", name, replicas, ErrBucketMissing, err)
	}
	return kv, nil
}
