package mesh

import "time"

// The durations that shape a decision of the controller, in one table.
// Values that depend on others are derived from them here, and
// timing_test.go states the relations. (The bucket's own timers — watch
// probes, audits, request timeouts — are about talking to NATS, not about
// membership, and live with the code that talks.)
const (
	// wireGuardKeepaliveTimeout is WireGuard's KEEPALIVE_TIMEOUT: a peer
	// that received data answers within it, even with nothing to send.
	wireGuardKeepaliveTimeout = 10 * time.Second
	// wireGuardRejectAfter is WireGuard's REJECT_AFTER_TIME: no session is
	// older than this.
	wireGuardRejectAfter = 180 * time.Second

	// First contact (contact.go). A new peer whose handshake this end
	// starts has contactKeepalive until its first handshake, when none is
	// configured, for at most contactBound. The older end starts
	// contactRetry after its device took the peer if nothing came; the
	// end that restarts crossed handshakes looks for a crossing after
	// contactRetry, then at jittered waits doubling up to contactRetryMax
	// (crossingConfirm after a look that heard the peer).
	contactKeepalive = time.Second
	contactRetry     = 250 * time.Millisecond
	contactRetryMax  = 4 * contactRetry
	contactBound     = 3 * time.Second
	// quietGrace is how long a quiet end (a host rotating its key) has its
	// peers without endpoints: past contactBound, so it never starts a
	// handshake while the other end still does.
	quietGrace = contactBound + contactRetryMax
	// contactPollMin is the shortest time between two reads of the
	// device's handshakes while first contacts are pending. A read is a
	// dump of every peer, so it is made when a contact is due, never on a
	// fixed fast tick: a join wave of a thousand peers must not read a
	// thousand-peer device twenty times a second.
	contactPollMin = contactRetry
	// crossingConfirm is how long after a look that heard from a peer but
	// saw no handshake the next look comes: a handshake under way completes
	// within a round trip, and a crossing stalls both ends (and what they
	// send) until the restart. It is one extra read of the device per
	// suspected crossing, not a polling rate.
	crossingConfirm = 100 * time.Millisecond
	// wireGuardRekeyTimeout is WireGuard's REKEY_TIMEOUT: an end whose
	// initiation got no answer sends its next one this much later.
	wireGuardRekeyTimeout = 5 * time.Second
	// refusedWithin is how long a refused initiation from a peer means
	// that the peer is waiting for this end to start: less than
	// WireGuard's retry, so this end never starts just as the peer's own
	// retry comes.
	refusedWithin = wireGuardRekeyTimeout - contactRetryMax
	// maxInitiating bounds the first contacts this end starts at once;
	// maxRefusals bounds the refused initiations remembered.
	maxRefusals   = 4 * maxInitiating
	maxInitiating = 256
	// sessionAge is how old a handshake may be and still carry a session.
	sessionAge = wireGuardRejectAfter

	// The contest for this host's prefix (claim.go): at most maxDefends
	// restores against newer foreign writes before standing down (two
	// hosts configured with one prefix would otherwise overwrite each
	// other for ever; the last to write has defends left and wins); a held
	// claim quiet for contestMemory starts the next contest from zero.
	maxDefends    = 3
	contestMemory = time.Minute

	// HeartbeatEvery is how often an agent writes its heartbeat; a host is
	// online (ikto-admin list, health, prune) while its last heartbeat is
	// younger than OnlineWithin: three beats, so one lost write is no alarm.
	HeartbeatEvery = 10 * time.Second
	OnlineWithin   = 3 * HeartbeatEvery
	// TwinHold is how long another live agent with this host's key
	// (twins.go) is believed in after its last heartbeat found between two
	// of ours: three beats, so two beats of ours with none of its between
	// them (the two tickers drifting past each other) do not end it.
	TwinHold = 3 * HeartbeatEvery
	// Unheard is how long a peer may go without sending anything back
	// while this host sends to it before it counts as unreachable (reach.go,
	// reported in heartbeats): WireGuard answers data within its keepalive
	// timeout, so a live path is never silent this long while traffic flows.
	Unheard = wireGuardKeepaliveTimeout + 5*time.Second
)
