package state

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Retry bounds for a snapshot that could not be written (disk full, read-only
// state_dir): it is tried again, more slowly each time, until it lands or a
// newer one replaces it.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// Saver writes snapshots off the caller's path: Offer only records the latest
// one and wakes Run, so the agent's reconcile loop never waits for a disk, and
// a burst of changes costs one write. Discard removes the file for good (the
// host was evicted) and makes every later Offer a no-op.
type Saver struct {
	path string
	log  *slog.Logger
	kick chan struct{}

	mu        sync.Mutex // guards pending and discarded
	pending   *offer
	discarded bool

	// offered is the accepted set (key → revision) last handed to
	// OfferPeers, so a pass that changed nothing writes nothing. Only
	// OfferPeers's caller touches it.
	offered map[string]uint64

	// wmu serialises writing and removing the file, so that a write in
	// flight when Discard is called cannot bring the file back after it.
	wmu sync.Mutex
}

// NewSaver returns a Saver for the file at path.
func NewSaver(path string, log *slog.Logger) *Saver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Saver{path: path, log: log, kick: make(chan struct{}, 1)}
}

// Path is the file the Saver writes.
func (s *Saver) Path() string { return s.path }

// offer is a snapshot not yet encoded: encoding a large mesh is left to Run.
type offer struct {
	id    Identity
	peers []peer.Accepted
	at    time.Time
}

// Offer queues peers (the accepted records of the other hosts; the caller
// must not modify the slice afterwards) as the next snapshot to write for id,
// replacing one not yet written. It costs the caller nothing but the call:
// encoding and the disk are Run's.
func (s *Saver) Offer(id Identity, peers []peer.Accepted) {
	o := &offer{id: id, peers: peers, at: time.Now()}
	s.mu.Lock()
	if !s.discarded {
		s.pending = o
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// OfferPeers is Offer for the accepted set as the controller reports it,
// when it differs from the set last offered (by key and revision): a resync
// or a record that changed nothing costs no write. Call it from one
// goroutine.
func (s *Saver) OfferPeers(id Identity, peers map[wgtypes.Key]peer.Accepted) {
	if sameRevisions(s.offered, peers) {
		return
	}
	s.offered = make(map[string]uint64, len(peers))
	list := make([]peer.Accepted, 0, len(peers))
	for _, p := range peers {
		s.offered[p.Key] = p.Revision
		list = append(list, p)
	}
	s.Offer(id, list)
}

func sameRevisions(offered map[string]uint64, peers map[wgtypes.Key]peer.Accepted) bool {
	if offered == nil || len(offered) != len(peers) {
		return false
	}
	for _, p := range peers {
		if rev, ok := offered[p.Key]; !ok || rev != p.Revision {
			return false
		}
	}
	return true
}

// Discard drops any queued snapshot, removes the file, and makes the Saver
// ignore later offers.
func (s *Saver) Discard() error {
	s.mu.Lock()
	s.discarded, s.pending = true, nil
	s.mu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return Remove(s.path)
}

// Run writes offered snapshots until ctx ends, then writes the last one still
// queued, so a change just before a clean stop is not lost. Failures are
// logged when they start and when they end, and retried; they never stop
// the agent.
func (s *Saver) Run(ctx context.Context) error {
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	delay, failing := minRetry, false
	for {
		select {
		case <-ctx.Done():
			s.flush(&failing)
			return nil
		case <-s.kick:
		case <-retry.C:
		}
		if s.flush(&failing) {
			delay = minRetry
			continue
		}
		retry.Reset(delay)
		delay = min(delay*2, maxRetry)
	}
}

// flush writes the queued snapshot, if any, and reports whether nothing is
// left to write.
func (s *Saver) flush(failing *bool) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	o := s.pending
	s.pending = nil
	discarded := s.discarded
	s.mu.Unlock()
	if o == nil || discarded {
		return true
	}
	snap := New(o.id, o.peers, o.at)
	if err := Save(s.path, snap); err != nil {
		s.mu.Lock()
		if s.pending == nil && !s.discarded {
			s.pending = o // nothing newer came meanwhile: try this one again
		}
		s.mu.Unlock()
		if !*failing {
			s.log.Warn("cannot write the mesh snapshot; will retry", "path", s.path, "err", err)
			*failing = true
		}
		return false
	}
	if *failing {
		s.log.Info("mesh snapshot written again", "path", s.path)
		*failing = false
	}
	s.log.Debug("mesh snapshot written", "path", s.path, "peers", len(snap.Records))
	return true
}
