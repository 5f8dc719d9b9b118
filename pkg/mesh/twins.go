package mesh

import "time"

// HeartbeatWriter is who wrote a heartbeat: its public key and the
// instance id its agent process drew at start ("" from an agent built
// before instance ids).
type HeartbeatWriter struct {
	Key, Instance string
}

// TwinChange is what one heartbeat write changed about the other live
// agent with this host's key.
type TwinChange int

const (
	TwinNone    TwinChange = iota // nothing changed
	TwinStarted                   // another agent with this key is live, none was
	TwinChanged                   // another agent than the one seen so far
	TwinEnded                     // none has written for TwinHold
)

// Twins tells, from what each of this agent's heartbeat writes found,
// whether another live agent holds this host's key: a cloned machine, or
// one config running on two hosts (docs/contract.md §4). Each write after
// the first is a compare-and-set on the previous one's revision, so a
// write that finds the key moved on learns who wrote in between. Both
// agents beat every HeartbeatEvery, so each finds the other's write
// between two of its own: a writer with the same key and another instance
// is the twin, and it is gone only once TwinHold passes without one (two
// beats of ours with no write of its between them are jitter of the two
// tickers, not its end). Not safe for concurrent use.
type Twins struct {
	twin        HeartbeatWriter
	live        bool
	since, last time.Time
}

// Beat takes what the heartbeat written at now found: other is the writer
// of the heartbeat that stood in its place since this agent's previous
// one, nil when none did; self is this agent as it writes. A writer with
// another public key is no twin (a contest for the prefix, which the claim
// handles).
func (t *Twins) Beat(now time.Time, self HeartbeatWriter, other *HeartbeatWriter) TwinChange {
	if other != nil && other.Key == self.Key && other.Instance != self.Instance {
		change := TwinNone
		switch {
		case !t.live:
			change, t.since = TwinStarted, now
		case other.Instance != t.twin.Instance:
			change, t.since = TwinChanged, now
		}
		t.twin, t.live, t.last = *other, true, now
		return change
	}
	if t.live && now.Sub(t.last) >= TwinHold {
		t.live = false
		return TwinEnded
	}
	return TwinNone
}

// Twin is the other live agent with this key and since when it has been
// seen; ok is false while there is none.
func (t *Twins) Twin() (w HeartbeatWriter, since time.Time, ok bool) {
	return t.twin, t.since, t.live
}
