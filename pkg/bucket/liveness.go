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
	// Writer is the agent process that wrote it: what tells two live
	// agents with one key apart (docs/contract.md §4).
	Writer
	// Duplicate, when set, is another live agent this one has seen writing
	// this heartbeat with the same public key: a cloned host, or one config
	// running twice.
	Duplicate *Duplicate `json:"duplicate,omitempty"`
	// Revision is the bucket revision the agent has applied to its device.
	Revision uint64 `json:"revision,omitempty"`
	// Unreachable are the public keys of peers this host sends to but hears
	// nothing from (exceptions only, so the heartbeat stays small): at most
	// MaxUnreachable of them.
	Unreachable []string `json:"unreachable,omitempty"`
}

// Writer is one agent process as its heartbeats show it: the instance id
// it drew at its start and its address as its NATS server sees it (a
// cloned machine has the same name, key and config, but not the same
// address). An agent before 0.4 writes neither.
type Writer struct {
	Instance string `json:"instance,omitempty"`
	Addr     string `json:"addr,omitempty"`
}

// Duplicate is another agent seen writing a heartbeat with this agent's
// public key, and since when it has been seen.
type Duplicate struct {
	Writer
	Since time.Time `json:"since"`
}

// Trimmed is d with its fields cut to the size an agent writes (an
// instance id of 16 hex digits, an IPv6 address), so that carrying what
// another writer said keeps the heartbeat small.
func (d Duplicate) Trimmed() Duplicate {
	d.Instance = d.Instance[:min(len(d.Instance), 32)]
	d.Addr = d.Addr[:min(len(d.Addr), len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"))]
	return d
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
	_, _, err := WriteHeartbeat(ctx, kv, prefix, hb, 0)
	return err
}

// WriteHeartbeat writes prefix's heartbeat with compare-and-set on after,
// the revision of this writer's previous heartbeat (0 for its first, which
// is a plain Put), and returns the revision written. When the key moved on
// since after, another writer wrote it in between: WriteHeartbeat returns
// that writer's heartbeat as other (nil when the key is gone or does not
// decode) and writes its own plainly, since the latest sign of life wins.
// Whether other is another agent with the same key is the caller's rule.
func WriteHeartbeat(ctx context.Context, kv jetstream.KeyValue, prefix netip.Prefix, hb Heartbeat, after uint64) (rev uint64, other *Heartbeat, err error) {
	val, err := hb.Encode()
	if err != nil {
		return 0, nil, fmt.Errorf("heartbeat %s: %w", prefix, err)
	}
	key := HeartbeatKey(prefix)
	if after != 0 {
		rev, err = kv.Update(ctx, key, val, after)
		if err == nil {
			return rev, nil, nil
		}
		if !isWrongRevision(err) {
			return 0, nil, fmt.Errorf("heartbeat %s: update %s in bucket %s at revision %d: %w", prefix, key, kv.Bucket(), after, err)
		}
		e, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			var found Heartbeat
			if json.Unmarshal(e.Value(), &found) == nil {
				other = &found
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted):
			return 0, nil, fmt.Errorf("heartbeat %s: get %s in bucket %s: %w", prefix, key, kv.Bucket(), err)
		}
	}
	if rev, err = kv.Put(ctx, key, val); err != nil {
		return 0, other, fmt.Errorf("heartbeat %s: put %s in bucket %s: %w", prefix, key, kv.Bucket(), err)
	}
	return rev, other, nil
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
