package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	ikbucket "github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is a test's own handle on the agents' KV bucket.
type Bucket struct {
	jetstream.KeyValue
	Conn *nats.Conn
}

// OpenBucket connects to natsURL (one server, or several comma-separated) and
// opens bucket, creating it (as an agent would) when it does not exist yet.
func OpenBucket(ctx context.Context, natsURL, bucket string) (*Bucket, error) {
	return openBucket(ctx, natsURL, bucket, true)
}

// OpenExistingBucket is OpenBucket for a bucket the agents create (with
// their nats_kv_replicas): it fails with bucket.ErrBucketMissing instead
// of creating it.
func OpenExistingBucket(ctx context.Context, natsURL, bucket string) (*Bucket, error) {
	return openBucket(ctx, natsURL, bucket, false)
}

func openBucket(ctx context.Context, natsURL, bucket string, create bool) (*Bucket, error) {
	nc, err := nats.Connect(natsURL, nats.Name("ikto-harness"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream on %s: %w", natsURL, err)
	}
	// Made as the agents make it (ikto's settings: rollups refused).
	kv, err := ikbucket.OpenBucket(ctx, js, bucket, create, 1)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open bucket %s on %s: %w", bucket, natsURL, err)
	}
	return &Bucket{KeyValue: kv, Conn: nc}, nil
}

// Replicas is the number of replicas the bucket's stream has.
func (b *Bucket) Replicas(ctx context.Context) (int, error) {
	st, err := b.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("status of bucket %s: %w", b.Bucket(), err)
	}
	js, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("status of bucket %s: unexpected type %T", b.Bucket(), st)
	}
	return js.StreamInfo().Config.Replicas, nil
}

// Close closes the connection.
func (b *Bucket) Close() error {
	b.Conn.Close()
	return nil
}

// Records decodes every peers.* entry, by key. Entries that do not decode
// are skipped: the bucket may hold what a test put there on purpose.
func (b *Bucket) Records(ctx context.Context) (map[string]peer.Record, error) {
	keys, err := b.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", b.Bucket(), err)
	}
	out := map[string]peer.Record{}
	for key := range keys.Keys() {
		if len(key) < len(peer.PeersPrefix) || key[:len(peer.PeersPrefix)] != peer.PeersPrefix {
			continue
		}
		e, err := b.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", key, err)
		}
		var r peer.Record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			continue
		}
		out[key] = r
	}
	return out, nil
}

// Record reads the record of prefix.
func (b *Bucket) Record(ctx context.Context, prefix netip.Prefix) (peer.Record, error) {
	key := peer.Key(prefix)
	e, err := b.Get(ctx, key)
	if err != nil {
		return peer.Record{}, fmt.Errorf("get %s (%s): %w", key, prefix, err)
	}
	var r peer.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return peer.Record{}, fmt.Errorf("decode %s (%s): %w", key, prefix, err)
	}
	return r, nil
}

// Absent is nil when key holds nothing (never written, deleted or purged),
// and otherwise says what it holds or why it could not be read.
func (b *Bucket) Absent(ctx context.Context, key string) error {
	e, err := b.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	return fmt.Errorf("%s holds revision %d: %s", key, e.Revision(), e.Value())
}

// Drop deletes the whole bucket, as `nats kv del` or a wiped server does.
func (b *Bucket) Drop(ctx context.Context) error {
	js, err := jetstream.New(b.Conn)
	if err != nil {
		return err
	}
	return js.DeleteKeyValue(ctx, b.Bucket())
}

// Exists is nil when the bucket exists, as after the agents made it again.
func (b *Bucket) Exists(ctx context.Context) error {
	js, err := jetstream.New(b.Conn)
	if err != nil {
		return err
	}
	_, err = js.KeyValue(ctx, b.Bucket())
	return err
}

// Remake deletes the bucket and creates it again at once, as an operator's
// `nats kv del` followed by `nats kv add` does.
func (b *Bucket) Remake(ctx context.Context) error {
	js, err := jetstream.New(b.Conn)
	if err != nil {
		return err
	}
	if err := js.DeleteKeyValue(ctx, b.Bucket()); err != nil {
		return fmt.Errorf("delete bucket %s: %w", b.Bucket(), err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.Bucket(), History: 64}); err != nil {
		return fmt.Errorf("create bucket %s again: %w", b.Bucket(), err)
	}
	return nil
}

// StoreFailed reports whether a write to the bucket fails with err_code
// 10077: its stream cannot store anything.
func (b *Bucket) StoreFailed(ctx context.Context) bool {
	var apiErr *jetstream.APIError
	_, err := b.Create(ctx, "probe.store", []byte("{}"))
	if err == nil {
		_ = b.Purge(ctx, "probe.store")
	}
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10077
}
