package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Heartbeats live in their own bucket, LiveBucket(main): agents watch the
// whole main bucket, and a write every few seconds per host there would wake
// every agent of the fleet for nothing. The claim's revision is never touched,
// so compare-and-set on claims and evictions keeps its meaning.
const (
	liveSuffix = "-live"
	// HeartbeatPrefix starts every heartbeat key.
	HeartbeatPrefix = "hb."
	// HeartbeatMaxAge is the live bucket's MaxAge: a host silent for a day
	// has no heartbeat at all, and `list` falls back to "never".
	HeartbeatMaxAge = 24 * time.Hour
)

// Heartbeat is the value of hb.<prefix>: who wrote it, when, and with which
// agent version.
type Heartbeat struct {
	PublicKey string    `json:"public_key"`
	Name      string    `json:"name"`
	At        time.Time `json:"at"`
	Version   string    `json:"version,omitempty"`
	// Revision is the bucket revision the agent has applied to its device.
	Revision uint64 `json:"revision,omitempty"`
	// Unreachable are the public keys of peers this host sends to but hears
	// nothing from (exceptions only, so the heartbeat stays small): at most
	// MaxUnreachable of them.
	Unreachable []string `json:"unreachable,omitempty"`
}

// MaxUnreachable bounds Heartbeat.Unreachable, so that a heartbeat stays
// well under the payload limit of an enrolled host's user
// (enroll.HostMaxPayload) in any fleet. A host that hears from none of
// this many peers is itself the likely fault, and the first
// MaxUnreachable keys already show it.
const MaxUnreachable = 64

// LiveBucket is the name of the heartbeat bucket that goes with the main
// bucket mainBucket.
func LiveBucket(mainBucket string) string { return mainBucket + liveSuffix }

// HeartbeatKey is the key of prefix's heartbeat: hb. + the same encoding of
// the prefix as the claim's key (peer.Key).
func HeartbeatKey(prefix netip.Prefix) string { return HeartbeatPrefix + peer.EncodePrefix(prefix) }

// ParseHeartbeatKey returns the prefix a hb.* key names.
func ParseHeartbeatKey(key string) (netip.Prefix, error) {
	enc, ok := strings.CutPrefix(key, HeartbeatPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a heartbeat key", key)
	}
	p, err := peer.DecodePrefix(enc)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("heartbeat key %s: %w", key, err)
	}
	return p.Masked(), nil
}

// Encode is hb's value in the bucket: its JSON, with the first
// MaxUnreachable keys of Unreachable and no more.
func (hb Heartbeat) Encode() ([]byte, error) {
	hb.Unreachable = hb.Unreachable[:min(len(hb.Unreachable), MaxUnreachable)]
	return json.Marshal(hb)
}

// PutHeartbeat writes prefix's heartbeat (hb.Encode). It is a plain Put:
// the last writer wins, which is right for "the latest sign of life".
func PutHeartbeat(ctx context.Context, kv jetstream.KeyValue, prefix netip.Prefix, hb Heartbeat) error {
	val, err := hb.Encode()
	if err != nil {
		return fmt.Errorf("heartbeat %s: %w", prefix, err)
	}
	key := HeartbeatKey(prefix)
	if _, err := kv.Put(ctx, key, val); err != nil {
		return fmt.Errorf("heartbeat %s: put %s in bucket %s: %w", prefix, key, kv.Bucket(), err)
	}
	return nil
}

// Heartbeats returns the latest heartbeat of every prefix. A nil kv (the
// bucket does not exist: no agent has written one yet) is an empty map, not
// an error; entries that do not decode are skipped.
func Heartbeats(ctx context.Context, kv jetstream.KeyValue) (map[netip.Prefix]Heartbeat, error) {
	out := map[netip.Prefix]Heartbeat{}
	if kv == nil {
		return out, nil
	}
	entries, err := Scan(ctx, kv, HeartbeatPrefix+">")
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil // deleted after it was opened
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		p, err := ParseHeartbeatKey(e.Key())
		if err != nil {
			continue
		}
		var hb Heartbeat
		if json.Unmarshal(e.Value(), &hb) != nil {
			continue
		}
		out[p] = hb
	}
	return out, nil
}
