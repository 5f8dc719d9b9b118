// Package store is ikto's view of the NATS JetStream KV bucket: opening (or
// creating) it, claiming a prefix with compare-and-set (SPEC §3), deleting with
// a revision, and watching it as "snapshot, then updates" across reconnects.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// ErrAddressInUse is matched (errors.Is) by an *InUseError.
var ErrAddressInUse = errors.New("address in use")

// InUseError says which host holds the prefix another host tried to claim.
type InUseError struct {
	Prefix netip.Prefix
	Holder peer.Record
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address in use: prefix %s is held by %q (public key %s); pick another with ikto-init or evict that host",
		e.Prefix, e.Holder.Name, e.Holder.PublicKey)
}

// Is makes errors.Is(err, ErrAddressInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrAddressInUse }

// ErrBucketMissing is returned by OpenBucket when the bucket does not exist and
// the caller may not create it.
var ErrBucketMissing = errors.New("bucket does not exist")

// ErrReplicasNotSupported is returned by OpenBucket when it was asked for a
// replicated bucket on a server that is not part of a JetStream cluster: a
// configuration error that retrying cannot fix.
var ErrReplicasNotSupported = errors.New("the NATS server is not a JetStream cluster")

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
		return nil, fmt.Errorf("create bucket %s (replicas %d): %w", name, replicas, err)
	}
	return kv, nil
}

// claimAttempts bounds the Create/Get/Update loop. Each lost round means another
// writer changed the key in between; more than a handful is not contention but
// a bug, and must not spin.
const claimAttempts = 8

// Claim takes rec's prefix for rec's public key (SPEC §3): Create the key; if
// it exists, Get it: the same public key refreshes the record with Update on the
// revision read (an agent restart), another key fails with *InUseError. Of any
// number of hosts racing for one prefix exactly one wins. It returns the
// revision of the stored record.
func Claim(ctx context.Context, kv jetstream.KeyValue, rec peer.Record) (uint64, error) {
	prefix, err := netip.ParsePrefix(rec.AllowedIP)
	if err != nil {
		return 0, fmt.Errorf("claim: allowed_ip %q: %w", rec.AllowedIP, err)
	}
	key := peer.Key(prefix)
	val := rec.Encode()
	for range claimAttempts {
		rev, err := kv.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("claim %s: create %s: %w", prefix, key, err)
		}
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // deleted between Create and Get: try Create again
		}
		if err != nil {
			return 0, fmt.Errorf("claim %s: get %s: %w", prefix, key, err)
		}
		holder, herr := decodeHolder(cur.Value())
		if herr != nil || holder.PublicKey != rec.PublicKey {
			// A record we cannot read is still someone's claim: never overwrite it.
			return 0, &InUseError{Prefix: prefix, Holder: holder}
		}
		rev, err = kv.Update(ctx, key, val, cur.Revision())
		if err == nil {
			return rev, nil
		}
		if !isWrongRevision(err) {
			return 0, fmt.Errorf("claim %s: update %s at revision %d: %w", prefix, key, cur.Revision(), err)
		}
	}
	return 0, fmt.Errorf("claim %s: key %s kept changing under %d attempts", prefix, key, claimAttempts)
}

func decodeHolder(v []byte) (peer.Record, error) {
	var r peer.Record
	err := json.Unmarshal(v, &r)
	return r, err
}

// isWrongRevision reports a compare-and-set that lost: the key moved on. A
// replicated bucket (nats_kv_replicas > 1) answers with its own code for the
// same thing.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Delete removes key if it is still at revision rev (compare-and-set).
func Delete(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) error {
	if err := kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("delete %s at revision %d: %w", key, rev, err)
	}
	return nil
}
