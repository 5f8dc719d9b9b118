package bucket

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ikto-mesh/ikto/pkg/peer"
	"github.com/ikto-mesh/ikto/pkg/retry"
)

// Reading the bucket's stream by direct get: the follow's snapshot, and the
// ranges of sequences it must read again.
//
// Servers from 2.11 answer a request with a batch, each answer naming the
// sequence of the one before it (Nats-Last-Sequence, 0 for the first), and
// end it with an "EOB" status that names the last; older servers answer
// with one message, found with a subject filter from a sequence on. Answers
// are core NATS: one lost on the way (a reader too slow for its
// subscription) is a break in that chain, and its range is asked for again,
// together with every other range still to read, in one round of requests.

// scanBatch is how many messages one direct get asks for.
const scanBatch = 512

// answerTimeout is how long a round of requests waits for its first
// answer, and at most for any other, before the requests still open are
// asked again.
const answerTimeout = 5 * time.Second

// minSilence is the shortest pause in a round's answers taken to mean the
// rest were lost.
const minSilence = 20 * time.Millisecond

// scanTries bounds the rounds in a row that get no answer at all.
const scanTries = 6

// roundWidth bounds the requests one round sends at once.
const roundWidth = 256

// Headers of direct get answers besides those of republished messages.
const (
	hdrLastSeq = "Nats-Last-Sequence"
	hdrStatus  = "Status"
)

// errNoDirectGet is a scan whose requests went unanswered scanTries rounds
// in a row.
var errNoDirectGet = errors.New("no answer to a direct get of the bucket's stream")

// errDirectGetRefused: the credentials may not send a direct get for the
// whole stream (a host enrolled before ikto 0.4).
var errDirectGetRefused = errors.New("direct get of the bucket's stream refused")

// span is a range of stream sequences; to 0 is the stream's end.
type span struct{ from, to uint64 }

// request is one direct get of a round.
type request struct {
	span
	prev uint64 // the sequence of the last answer read
	next uint64 // where what is still unread starts
	done bool
}

// scanner is one scan: its subscription and what is still to read.
type scanner struct {
	m       *Mesh
	inbox   string
	replies chan *nats.Msg
	each    func(peer.Write)
	sent    int
	todo    []span
}

// scan reads the messages of the bucket's stream with sequences from
// upTo (0: to the end) and calls each with every one, once, not always in
// sequence order. It returns the highest sequence it read (0 if none).
func (m *Mesh) scan(ctx context.Context, from, upTo uint64, each func(peer.Write)) (last uint64, err error) {
	s := &scanner{m: m, inbox: m.NC.NewInbox() + ".scan", replies: make(chan *nats.Msg, 4*scanBatch)}
	s.each = func(w peer.Write) {
		last = max(last, w.Revision)
		each(w)
	}
	// Each request has its own reply subject under one subscription, so
	// an answer is matched to its request, and a late answer to one given
	// up on is dropped.
	sub, err := m.NC.ChanSubscribe(s.inbox+".*", s.replies)
	if err != nil {
		return 0, fmt.Errorf("scan bucket %s: %w", m.nats.Bucket, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	s.todo = []span{{from, upTo}}
	pause := retry.Policy{Min: 50 * time.Millisecond, Max: 2 * time.Second}.New()
	for silent := 0; len(s.todo) > 0; {
		answered, err := s.round(ctx)
		if err != nil {
			return last, fmt.Errorf("scan bucket %s: %w", m.nats.Bucket, err)
		}
		if answered {
			silent = 0
			pause.Reset()
			continue
		}
		if err := m.directGetRefused(); err != nil {
			return last, fmt.Errorf("scan bucket %s: %w", m.nats.Bucket, err)
		}
		if silent++; silent >= scanTries {
			return last, fmt.Errorf("scan bucket %s from %d: %w", m.nats.Bucket, s.todo[0].from, errNoDirectGet)
		}
		if err := sleep(ctx, pause.NextBackOff()); err != nil {
			return last, err
		}
	}
	return last, nil
}

// round asks for up to roundWidth of the spans still to read, reads the
// answers until each request is done or none comes for answerTimeout, and
// puts back what is still to read. It reports whether any answer came.
func (s *scanner) round(ctx context.Context) (answered bool, err error) {
	n := min(len(s.todo), roundWidth)
	open := make(map[string]*request, n)
	for _, sp := range s.todo[:n] {
		s.sent++
		reply := s.inbox + "." + strconv.Itoa(s.sent)
		open[reply] = &request{span: sp, next: sp.from}
		if err := s.m.NC.PublishRequest(directGetSubject(s.m.nats.Bucket), reply, s.m.directGetRequest(sp)); err != nil {
			return false, err
		}
	}
	s.todo = s.todo[n:]
	// A busy server may take long to answer at all: nothing is asked
	// again before answerTimeout, or a fleet reading the bucket at once
	// would ask for it many times over. After the first answer, answers
	// come back to back, and a pause of a few times the first one's delay
	// means the rest were lost.
	sent, silence := time.Now(), answerTimeout
	waiting := n
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	for waiting > 0 {
		select {
		case <-ctx.Done():
			return answered, ctx.Err()
		case <-timer.C:
			waiting = 0
		case msg := <-s.replies:
			r := open[msg.Subject]
			if r == nil || r.done {
				continue // an answer to a request given up on
			}
			if !answered {
				silence = min(max(4*time.Since(sent), minSilence), answerTimeout)
			}
			timer.Reset(silence)
			answered = true
			if err := s.answer(r, msg); err != nil {
				return answered, err
			}
			if r.done {
				waiting--
			}
		}
	}
	for _, r := range open {
		if !r.done && (r.to == 0 || r.next <= r.to) {
			s.todo = append(s.todo, span{r.next, r.to})
		}
	}
	return answered, nil
}

// answer takes one answer to r.
func (s *scanner) answer(r *request, msg *nats.Msg) error {
	if status := msg.Header.Get(hdrStatus); status != "" {
		switch status {
		case "404": // nothing at or after the sequence asked for
			r.done = true
		case "204": // the end of a batch
			s.chain(r, msg, 0)
			r.done = true
			if pending := msg.Header.Get(hdrPending); pending != "" && pending != "0" && (r.to == 0 || r.next <= r.to) {
				s.todo = append(s.todo, span{r.next, r.to})
			}
		default: // a request refused (408), no stream to answer (503), ...
			return fmt.Errorf("direct get answered %s %s", status, msg.Header.Get("Description"))
		}
		return nil
	}
	w, err := message(msg, s.m.nats.Bucket)
	if err != nil {
		return err
	}
	batched := msg.Header.Get(hdrPending) != ""
	if batched {
		s.m.batches.Store(true)
		s.chain(r, msg, w.Revision)
	}
	r.prev = w.Revision
	if r.to > 0 && w.Revision > r.to {
		r.done = true
		return nil
	}
	s.each(w)
	r.next = w.Revision + 1
	switch {
	case r.to > 0 && w.Revision == r.to:
		r.done = true // all of it: no need to wait for the end
	case !batched:
		// A server without batches: one message per request.
		r.done = true
		s.todo = append(s.todo, span{r.next, r.to})
	}
	return nil
}

// chain checks that msg follows the last answer to r (the first names 0):
// what lies between is read again. at is msg's own sequence (0 for the end
// of a batch).
func (s *scanner) chain(r *request, msg *nats.Msg, at uint64) {
	before, err := strconv.ParseUint(msg.Header.Get(hdrLastSeq), 10, 64)
	if err != nil {
		if at == 0 {
			return
		}
		before = at - 1
	}
	if before > r.prev {
		s.todo = append(s.todo, span{max(r.prev+1, r.from), before})
	}
}

func directGetSubject(bucket string) string { return "$JS.API.DIRECT.GET." + streamName(bucket) }

// directGetRequest asks for the messages of sp. The stream holds only the
// bucket's subjects: a server that answers with batches needs no filter,
// and reads faster without one; an older one needs it to step over the
// sequences that are gone.
func (m *Mesh) directGetRequest(sp span) []byte {
	batch := uint64(scanBatch)
	if sp.to > 0 {
		batch = min(batch, sp.to-sp.from+1)
	}
	if m.batches.Load() {
		return fmt.Appendf(nil, `{"seq":%d,"batch":%d}`, sp.from, batch)
	}
	return fmt.Appendf(nil, `{"seq":%d,"next_by_subj":%q,"batch":%d}`, sp.from, kvPrefix(m.nats.Bucket)+">", batch)
}

// directGetRefused is the server's refusal of this connection's direct
// gets (the credentials may not send them), which nats.go keeps as the
// connection's last error.
func (m *Mesh) directGetRefused() error {
	err := m.NC.LastError()
	if err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), directGetSubject(m.nats.Bucket)) {
		return fmt.Errorf("%w: %w", errDirectGetRefused, err)
	}
	return nil
}

// message is one message of the bucket's stream, as a direct get or a
// republish carries it.
func message(m *nats.Msg, bucket string) (peer.Write, error) {
	subject := m.Header.Get(hdrSubject)
	key, ok := strings.CutPrefix(subject, kvPrefix(bucket))
	if !ok {
		return peer.Write{}, fmt.Errorf("message on %q is not of bucket %s", subject, bucket)
	}
	if stream := m.Header.Get(hdrStream); stream != "" && stream != streamName(bucket) {
		return peer.Write{}, fmt.Errorf("message of stream %q, not %s", stream, streamName(bucket))
	}
	seq, err := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64)
	if err != nil || seq == 0 {
		return peer.Write{}, fmt.Errorf("message on %q: bad %s %q", subject, hdrSequence, m.Header.Get(hdrSequence))
	}
	op := m.Header.Get(hdrKVOp)
	return peer.Write{Key: key, Revision: seq, Value: m.Data, Deleted: op == "DEL" || op == "PURGE"}, nil
}

// subscribeRefused is the server's refusal of a subscription to subject,
// which nats.go keeps as the connection's last error (the flush that
// follows the subscription waits for it).
func subscribeRefused(nc *nats.Conn, subject string) error {
	err := nc.LastError()
	if err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
		return fmt.Errorf("subscribe to %s: %w; enroll the host again (ikto-admin enroll) for credentials that may follow the bucket", subject, err)
	}
	return nil
}
