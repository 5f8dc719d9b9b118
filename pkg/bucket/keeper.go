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

// RepairPolicy spaces the attempts of a repair that failed (NATS trouble,
// a bucket this host may not create).
var RepairPolicy = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Keeper carries out repairs of this host's claim, one at a time, off the
// controller's goroutine. A newer request replaces one not yet done, except
// that a request to re-create the bucket is kept until it is done.
type Keeper struct {
	Mesh *Mesh
	// Self is this host's record as it starts, Key its private key and
	// Rules the mesh's; SetSelf changes the first two (a key rotation).
	Self  peer.Record
	Key   wgtypes.Key
	Rules peer.Rules
	Log   *slog.Logger
	// Created is called after the bucket was created again, so the watch
	// re-reads it at once.
	Created func()
	// Done is called with each repair action carried out ("bucket",
	// "reclaim", "defend", "release", "revoke"), for metrics.
	Done func(action string)

	mu      sync.Mutex
	pending peer.Repair
	wake    chan struct{}
	once    sync.Once
	// mayNotWrite is set once this host's credentials refused to write
	// another host's record back (an enrolled host writes only its own
	// key): said once, not tried again. Only Run's goroutine uses it.
	mayNotWrite bool
	// storeFailed is when the stream that refused the last repair with
	// ErrStoreFailed was made; broken is set when it refused twice in a row:
	// it is deleted and made again. Only Run's goroutine uses them.
	storeFailed, broken time.Time
}

// SetSelf makes r the record this keeper writes for this host (a key
// rotation: the new key's record, handed over by the old key).
func (k *Keeper) SetSelf(r peer.Record, key wgtypes.Key) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Self, k.Key = r, key
}

func (k *Keeper) self() peer.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Self
}

func (k *Keeper) privateKey() wgtypes.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Key
}

func (k *Keeper) init() { k.once.Do(func() { k.wake = make(chan struct{}, 1) }) }

// Request asks for r; it never blocks.
func (k *Keeper) Request(r peer.Repair) {
	if r.Empty() {
		return
	}
	k.init()
	k.mu.Lock()
	k.pending = r.Keep(k.pending)
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
		failed peer.Repair
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
				k.pending = k.pending.Keep(failed)
			}
			k.mu.Unlock()
		}
		again = nil
		k.mu.Lock()
		r := k.pending
		k.pending = peer.Repair{}
		k.mu.Unlock()
		if r.Empty() {
			continue
		}
		err := k.repair(ctx, r)
		k.noteStoreFailure(ctx, err)
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
	}
}

const repairTimeout = 5 * time.Second

// noteStoreFailure keeps track of writes the bucket's stream refused as
// ErrStoreFailed: the same stream refusing twice in a row is broken for
// good, and the next repair makes the bucket again.
func (k *Keeper) noteStoreFailure(ctx context.Context, err error) {
	if !errors.Is(err, ErrStoreFailed) {
		k.storeFailed = time.Time{}
		return
	}
	cctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	at, cerr := k.Mesh.created(cctx)
	if cerr != nil {
		return
	}
	if at.Equal(k.storeFailed) {
		k.broken = at
		k.Log.Warn("the bucket's stream refuses every write (its files are gone); making the bucket again", "bucket", k.Mesh.Bucket(), "err", err)
	}
	k.storeFailed = at
}

// repair carries out r.
func (k *Keeper) repair(ctx context.Context, r peer.Repair) error {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	if r.Bucket || !k.broken.IsZero() {
		if err := k.recreate(ctx); err != nil {
			return err
		}
		r.Reclaim = true
	}
	if r.Reclaim {
		if err := k.reclaim(ctx); err != nil {
			return err
		}
	}
	if r.Defend != 0 {
		if err := k.defend(ctx, r.Defend); err != nil {
			return err
		}
	}
	for _, s := range r.Release {
		if err := k.release(ctx, s); err != nil {
			return err
		}
	}
	// Last: a host that may not write others' keys learns so only when its
	// write goes unanswered, which must not hold up its own record.
	if len(r.WriteBack) > 0 {
		if err := k.writeBack(ctx, r.WriteBack); err != nil {
			return err
		}
	}
	if len(r.Revoke) > 0 {
		if err := k.restoreRevocations(ctx, r.Revoke); err != nil {
			return err
		}
	}
	return nil
}

// writeBack writes the signed records the bucket lost back with Create: a
// signed record speaks for itself, so whoever writes it changes nothing of
// what it says. A host that may not says so once.
func (k *Keeper) writeBack(ctx context.Context, lost []peer.Lost) error {
	if k.mayNotWrite {
		return nil
	}
	n := 0
	for _, l := range lost {
		_, err := k.Mesh.kv.Create(ctx, l.Key, l.Value)
		err = k.Mesh.Explain(err)
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
			continue // written back by its host or another agent first
		case errors.Is(err, ErrPermission):
			k.mayNotWrite = true
			k.Log.Info("the bucket lost records of other hosts, and this host may write only its own: their hosts or an agent with wider credentials write them back",
				"bucket", k.Mesh.kv.Bucket(), "records", len(lost), "err", err)
			return nil
		case err != nil:
			return fmt.Errorf("write back %s: %w", l.Key, err)
		}
		n++
		k.done("write_back")
	}
	if n > 0 {
		k.Log.Warn("the bucket had lost signed records of other hosts; wrote them back", "records", n)
	}
	return nil
}

// recreate makes the bucket again with the agent's settings. A host that
// may not create it says so and keeps waiting for an operator.
func (k *Keeper) recreate(ctx context.Context) error {
	made, err := k.Mesh.remake(ctx, k.broken)
	if err != nil {
		if errors.Is(err, ErrPermission) {
			return fmt.Errorf("bucket %s is missing or broken and this host may not make it (ikto-admin init-bucket does): %w", k.Mesh.kv.Bucket(), err)
		}
		return err
	}
	k.broken, k.storeFailed = time.Time{}, time.Time{}
	if made {
		k.Log.Warn("the bucket was gone; it exists again and this host writes its record back", "bucket", k.Mesh.kv.Bucket())
	}
	k.done("bucket")
	if k.Created != nil {
		k.Created()
	}
	return nil
}

// restoreRevocations writes back revocations the bucket lost, as they
// were (a signed one stays signed). Revocations are commands, and a bucket
// made again must not let evicted keys back in. A host that may not write
// them says so and leaves them: retrying cannot help.
func (k *Keeper) restoreRevocations(ctx context.Context, lost []peer.Lost) error {
	for i, l := range lost {
		pk, err := peer.ParseRevokedKey(l.Key)
		if err != nil {
			continue
		}
		created, err := createRevocation(ctx, k.Mesh.kv, pk, l.Value)
		err = k.Mesh.Explain(err)
		if errors.Is(err, ErrPermission) {
			k.Log.Warn("the bucket lost revocations this agent saw, and this host may not write them back: agents that saw them still refuse those keys; evict them again with ikto-admin evict",
				"bucket", k.Mesh.kv.Bucket(), "revocations", len(lost)-i, "err", err)
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
	p, _ := k.self().Prefix()
	return peer.Key(p)
}

// reclaim writes this host's record where there is none. Someone else's
// value there is not ours to overwrite: the watch shows it, and the
// controller decides.
func (k *Keeper) reclaim(ctx context.Context) error {
	_, err := k.Mesh.kv.Create(ctx, k.key(), k.self().Encode())
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return nil
	case err != nil:
		return fmt.Errorf("write back %s: %w", k.key(), k.Mesh.Explain(err))
	}
	k.Log.Warn("this host's record was missing from the bucket; wrote it back", "key", k.key(), "prefix", k.self().AllowedIP)
	k.done("reclaim")
	return nil
}

// defend puts this host's record back over the value at revision rev. A
// lost compare-and-set means a newer write: the controller sees it next.
func (k *Keeper) defend(ctx context.Context, rev uint64) error {
	_, err := k.Mesh.kv.Update(ctx, k.key(), k.self().Encode(), rev)
	switch {
	case isWrongRevision(err):
		return nil
	case err != nil:
		return fmt.Errorf("restore %s over revision %d: %w", k.key(), rev, k.Mesh.Explain(err))
	}
	k.Log.Warn("restored this host's record over a value that was not its own", "key", k.key(), "revision", rev)
	k.done("defend")
	return nil
}

// release deletes an older record of this host's key, left under a prefix
// it no longer claims, if it is still at the revision seen.
func (k *Keeper) release(ctx context.Context, s peer.Stale) error {
	cmd, err := k.Rules.HostCommand(s.Key, k.privateKey(), s.Seq)
	if err != nil {
		return fmt.Errorf("release %s: %w", s.Key, err)
	}
	err = k.Mesh.Explain(DeleteCommand(ctx, k.Mesh.JS, k.Mesh.kv.Bucket(), s.Key, s.Revision, cmd))
	switch {
	case isWrongRevision(err):
		return nil // written since: the controller sees what is there now
	case errors.Is(err, ErrPermission):
		k.Log.Warn("an older record of this host's key sits at a prefix it left, and this host may not delete it; it routes nothing, and an operator may delete it",
			"key", s.Key, "err", err)
		return nil
	case err != nil:
		return fmt.Errorf("release the old claim %s: %w", s.Key, err)
	}
	k.Log.Info("released this host's old claim: it moved", "key", s.Key, "prefix", k.self().AllowedIP)
	k.done("release")
	return nil
}

func (k *Keeper) done(action string) {
	if k.Done != nil {
		k.Done(action)
	}
}
