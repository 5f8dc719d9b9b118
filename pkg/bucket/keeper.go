package bucket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// Repair is what the mesh controller asks of the bucket to heal this host's
// claim. The zero Repair asks nothing.
type Repair struct {
	// Bucket: the bucket is gone; create it again (where permitted) with
	// the agent's settings, then write the record back.
	Bucket bool
	// Reclaim: no record is at our key; write ours with Create, so a real
	// race for the prefix still has exactly one winner.
	Reclaim bool
	// Defend: a value that is not our record sits at our key at this
	// revision; put ours back with Update on it (compare-and-set).
	Defend uint64
	// Release: records of our key under other prefixes (the host moved, or
	// someone copied it); delete each with compare-and-set.
	Release []Stale
	// Held: our own claim is held, so our leftovers (our record under a
	// prefix we left) may go too. Until then only a stranger's copies go:
	// a leftover still routes this host's old prefix to it, harmlessly,
	// while a copy routes it to whatever address the copy names.
	Held bool
	// Revoke: revocations this agent saw that the bucket no longer has (it
	// was deleted and made again, or restored from an older backup); each
	// is written back with Create where this host may. A host that may not
	// says so, once per request: the agents that saw them still refuse those keys, but
	// an agent that starts now would not.
	Revoke []wgtypes.Key
}

// Stale is a record to delete if it is still at Revision.
type Stale struct {
	Key      string
	Revision uint64
}

// Empty reports whether r asks nothing.
func (r Repair) Empty() bool {
	return !r.Bucket && !r.Reclaim && r.Defend == 0 && len(r.Release) == 0 && len(r.Revoke) == 0
}

// keep carries into r what a newer request must not drop: re-making the
// bucket, and revocations to write back.
func (r Repair) keep(older Repair) Repair {
	r.Bucket = r.Bucket || older.Bucket
	if len(r.Revoke) == 0 {
		r.Revoke = older.Revoke
	}
	return r
}

// RepairPolicy spaces the attempts of a repair that failed (NATS trouble,
// a bucket this host may not create).
var RepairPolicy = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Keeper carries out repairs of this host's claim, one at a time, off the
// controller's goroutine. A newer request replaces one not yet done, except
// that a request to re-create the bucket is kept until it is done.
type Keeper struct {
	Conn *Conn
	KV   jetstream.KeyValue
	// Self is this host's record.
	Self peer.Record
	Log  *slog.Logger
	// Created is called after the bucket was created again, so the watch
	// re-reads it at once.
	Created func()
	// Done is called with each repair action carried out ("bucket",
	// "reclaim", "defend", "release", "revoke"), for metrics.
	Done func(action string)

	mu      sync.Mutex
	pending Repair
	wake    chan struct{}
	once    sync.Once
	// mayNot are the copies (key → revision) this host's credentials may
	// not delete (an enrolled host writes only its own key): said once,
	// left to an operator, tried again only once the copy changes. Only
	// Run's goroutine uses it.
	mayNot map[string]uint64
}

func (k *Keeper) init() { k.once.Do(func() { k.wake = make(chan struct{}, 1) }) }

// Request asks for r; it never blocks.
func (k *Keeper) Request(r Repair) {
	if r.Empty() {
		return
	}
	k.init()
	k.mu.Lock()
	k.pending = r.keep(k.pending)
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Run carries out requests until ctx ends. A failed repair is tried again
// with RepairPolicy's delays until it succeeds or a newer request replaces it.
func (k *Keeper) Run(ctx context.Context) error {
	k.init()
	delays := RepairPolicy.New()
	var (
		again  <-chan time.Time
		failed Repair
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.wake:
		case <-again:
			k.mu.Lock()
			if k.pending.Empty() {
				k.pending = failed
			} else {
				k.pending = k.pending.keep(failed)
			}
			k.mu.Unlock()
		}
		again = nil
		k.mu.Lock()
		r := k.pending
		k.pending = Repair{}
		k.mu.Unlock()
		if r.Empty() {
			continue
		}
		left, err := k.repair(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := delays.NextBackOff()
			k.Log.Warn("repair of this host's claim failed; retrying", "retry_in", wait.Round(time.Millisecond), "err", err)
			failed, again = r, time.After(wait)
			continue
		}
		delays.Reset()
		if len(left) > 0 {
			// Look again later even if the bucket stays quiet: a holder
			// that does not restore its record (it moved, or it died) no
			// longer protects the copy.
			failed, again = Repair{Release: left, Held: r.Held}, time.After(holderRecheck)
		}
	}
}

// holderRecheck is how long a copy left to a live holder waits before this
// host looks at it again.
const holderRecheck = 3 * time.Second

const repairTimeout = 5 * time.Second

// repair carries out r. It returns the copies it left to a live holder.
func (k *Keeper) repair(ctx context.Context, r Repair) ([]Stale, error) {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	if r.Bucket {
		if err := k.recreate(ctx); err != nil {
			return nil, err
		}
		r.Reclaim = true
	}
	// Copies of our key go before our record is written again: the new
	// revision would make them the older, and so the winning, record of it.
	var left []Stale
	for _, s := range r.Release {
		kept, err := k.release(ctx, s, r.Held)
		if err != nil {
			return nil, err
		}
		if kept {
			left = append(left, s)
		}
	}
	if r.Reclaim {
		if err := k.reclaim(ctx); err != nil {
			return nil, err
		}
	}
	if r.Defend != 0 {
		if err := k.defend(ctx, r.Defend); err != nil {
			return nil, err
		}
	}
	// Last: a host that may not write revocations learns so only when its
	// write goes unanswered, which must not hold up its own record.
	if len(r.Revoke) > 0 {
		if err := k.restoreRevocations(ctx, r.Revoke); err != nil {
			return nil, err
		}
	}
	return left, nil
}

// recreate makes the bucket again with the agent's settings. A host that
// may not create it says so and keeps waiting for an operator.
func (k *Keeper) recreate(ctx context.Context) error {
	if _, err := k.Conn.Mesh(ctx, true); err != nil {
		if errors.Is(err, ErrPermission) {
			return fmt.Errorf("bucket %s is missing and this host may not create it (ikto-admin init-bucket does): %w", k.KV.Bucket(), err)
		}
		return err
	}
	k.Log.Warn("the bucket was gone; this host made sure it exists again and writes its record back", "bucket", k.KV.Bucket())
	k.done("bucket")
	if k.Created != nil {
		k.Created()
	}
	return nil
}

// restoreRevocations writes back revocations the bucket lost. Revocations
// are commands, and a bucket made again must not let evicted keys back in.
// A host that may not write them says so and leaves them: retrying
// cannot help.
func (k *Keeper) restoreRevocations(ctx context.Context, keys []wgtypes.Key) error {
	rv := peer.Revocation{Name: "(written back by " + k.Self.Name + ")", RevokedAt: time.Now().UTC()}
	for i, pk := range keys {
		created, err := createRevocation(ctx, k.KV, pk, rv)
		err = k.Conn.Explain(err)
		if errors.Is(err, ErrPermission) {
			k.Log.Warn("the bucket lost revocations this agent saw, and this host may not write them back: agents that saw them still refuse those keys; evict them again with ikto-admin evict",
				"bucket", k.KV.Bucket(), "revocations", len(keys)-i, "err", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("write back: %w", err)
		}
		if !created {
			continue // another host wrote it back first
		}
		k.Log.Warn("the bucket had lost a revocation this agent saw; wrote it back", "public_key", pk.String())
		k.done("revoke")
	}
	return nil
}

func (k *Keeper) key() string {
	p, _ := k.Self.Prefix()
	return peer.Key(p)
}

// reclaim writes this host's record where there is none. Someone else's
// value there is not ours to overwrite: the watch shows it, and the
// controller decides.
func (k *Keeper) reclaim(ctx context.Context) error {
	_, err := k.KV.Create(ctx, k.key(), k.Self.Encode())
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return nil
	case err != nil:
		return fmt.Errorf("write back %s: %w", k.key(), k.Conn.Explain(err))
	}
	k.Log.Warn("this host's record was missing from the bucket; wrote it back", "key", k.key(), "prefix", k.Self.AllowedIP)
	k.done("reclaim")
	return nil
}

// defend puts this host's record back over the value at revision rev. A
// lost compare-and-set means a newer write: the controller sees it next.
func (k *Keeper) defend(ctx context.Context, rev uint64) error {
	_, err := k.KV.Update(ctx, k.key(), k.Self.Encode(), rev)
	switch {
	case isWrongRevision(err):
		return nil
	case err != nil:
		return fmt.Errorf("restore %s over revision %d: %w", k.key(), rev, k.Conn.Explain(err))
	}
	k.Log.Warn("restored this host's record over a value that was not its own", "key", k.key(), "revision", rev)
	k.done("defend")
	return nil
}

// release deletes a stale record of this host's key left under a prefix it
// no longer claims. It reports whether it left the record to a live holder.
func (k *Keeper) release(ctx context.Context, s Stale, held bool) (bool, error) {
	if rev, ok := k.mayNot[s.Key]; ok && rev == s.Revision {
		return false, nil
	}
	if e, err := k.KV.Get(ctx, s.Key); err == nil {
		if e.Revision() != s.Revision {
			return false, nil // written since: the controller sees what is there now
		}
		if r, err := decodeHolder(e.Value()); !held && err == nil && (Copy{Record: r}).Leftover(k.Self) {
			return false, nil // ours: it goes once our claim is held
		}
	}
	// A copy written over a live host's claim is that host's to restore:
	// it defends its record with compare-and-set, and its peers keep it
	// meanwhile; a delete from here would drop it from their devices until
	// it wrote its record back. Not knowing who holds it, look again soon.
	switch holder, err := k.liveHolder(ctx, s.Key); {
	case err != nil:
		k.Log.Warn("cannot tell whether a live host holds the prefix under a copy of this host's key; looking again shortly",
			"key", s.Key, "err", err)
		return true, nil
	case holder != "":
		k.Log.Warn("a copy of this host's key sits on another live host's claim; leaving it to that host to restore",
			"key", s.Key, "holder", holder)
		return true, nil
	}
	err := k.Conn.Explain(ReleaseMarker(ctx, k.Conn.JS, k.KV.Bucket(), s.Key, s.Revision, k.Self.PublicKey))
	switch {
	case isWrongRevision(err):
		return false, nil
	case errors.Is(err, ErrPermission):
		if k.mayNot == nil {
			k.mayNot = map[string]uint64{}
		}
		k.mayNot[s.Key] = s.Revision
		prefix, _ := peer.ParseKey(s.Key)
		k.Log.Warn("a copy of this host's key sits at another prefix and this host may not delete it: agents route the key by its older record; an operator removes the copy with ikto-admin evict PREFIX --keep-key",
			"key", s.Key, "prefix", prefix, "err", err)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("release the old claim: %w", k.Conn.Explain(err))
	}
	k.Log.Info("released this host's old claim: it moved", "key", s.Key, "prefix", k.Self.AllowedIP)
	k.done("release")
	return false, nil
}

// liveHolder names the live host that claims the prefix of key (see
// LiveHolder), or "" when there is none.
func (k *Keeper) liveHolder(ctx context.Context, key string) (string, error) {
	prefix, err := peer.ParseKey(key)
	if err != nil {
		return "", nil
	}
	live, err := k.Conn.LiveIfAny(ctx)
	if err != nil {
		return "", err
	}
	hb, moved, err := LiveHolder(ctx, k.KV, live, prefix, k.Self.PublicKey)
	if err != nil {
		return "", err
	}
	if moved.IsValid() {
		k.Log.Info("the host that claimed the prefix under a copy of this host's key has moved; releasing the copy",
			"key", key, "holder", hb.Name, "now_at", moved)
		return "", nil
	}
	if hb.Name == "" {
		return hb.PublicKey, nil
	}
	return hb.Name, nil
}

func (k *Keeper) done(action string) {
	if k.Done != nil {
		k.Done(action)
	}
}
