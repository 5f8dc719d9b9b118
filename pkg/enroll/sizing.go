package enroll

import (
	"fmt"

	"github.com/nats-io/jwt/v2"
)

// The mesh account's limits follow from one input, the most hosts it
// serves (Sizing). Every value is derived here and nowhere else; the tests
// state the relations between them. The account JWT carries them, so the
// server enforces them on every user of the account, enrolled or not.

// DefaultMaxHosts is init-operator's --max-hosts.
const DefaultMaxHosts = 1000

// maxMaxHosts bounds Sizing.MaxHosts so that no derived value overflows
// (the server keeps connection and consumer counts in an int32).
const maxMaxHosts = 1 << 20

const (
	// adminHeadroom is what the limits on connections and consumers leave
	// beyond the hosts' share: ikto-admin (list, health, evict and
	// init-bucket each open one connection and a few short-lived watches),
	// the nats CLI and monitoring.
	adminHeadroom = 64
	// perHost is how many connections, and watches on the bucket's stream,
	// one host may hold at once. An agent has one connection and one watch
	// (an ordered consumer). After a network break it reconnects and makes
	// a new watch, while the server keeps the old connection, and the old
	// watch with it, until it finds the connection dead (up to a few
	// minutes of missed pings). A fleet that reconnects at once, after a
	// network failure between it and the server, so briefly holds two.
	perHost = 2
	// bucketStreams are the bucket and its heartbeat bucket.
	bucketStreams = 2
	// streamHeadroom leaves room for one more pair of buckets, so that an
	// operator can make a new bucket beside the old before moving a fleet.
	streamHeadroom = 2
	// hostDiskBytes is each host's share of the account's disk. A host
	// writes two keys, its record and its heartbeat, and the buckets keep
	// one message per key: at most 2 × (HostMaxPayload + stored overhead),
	// about 33 KiB. ×3 for a JetStream cluster's replicas (an account limit
	// without tiers counts every replica's bytes), and ×2 for what outlives
	// hosts (revocations, delete markers of released prefixes). Real hosts
	// use about 1 KiB. Rounded up to 256 KiB.
	hostDiskBytes = 256 << 10
)

// Sizing is the one input the mesh account's limits are derived from.
type Sizing struct {
	// MaxHosts is the most hosts the account serves at once.
	MaxHosts int
}

// DefaultSizing is init-operator's sizing without --max-hosts.
func DefaultSizing() Sizing { return Sizing{MaxHosts: DefaultMaxHosts} }

// Check reports a MaxHosts the limits cannot be derived from.
func (s Sizing) Check() error {
	if s.MaxHosts < 1 || s.MaxHosts > maxMaxHosts {
		return fmt.Errorf("max hosts %d: want 1 to %d", s.MaxHosts, maxMaxHosts)
	}
	return nil
}

// Connections is the account's limit on client connections at once.
func (s Sizing) Connections() int64 { return perHost*int64(s.MaxHosts) + adminHeadroom }

// Streams is the account's limit on JetStream streams.
func (s Sizing) Streams() int64 { return bucketStreams + streamHeadroom }

// ConsumersPerStream is the account's limit on consumers. nats-server
// applies it to each stream separately, not to the account as a whole: a
// host whose permissions let it make consumers on both buckets' streams
// (Permissions) can make this many on each, and no more. Agents keep one
// watch each on the bucket's stream; on the heartbeat bucket's they only
// scan, for a moment.
func (s Sizing) ConsumersPerStream() int64 { return perHost*int64(s.MaxHosts) + adminHeadroom }

// DiskBytes is the account's limit on file storage, all streams and
// replicas together. A standalone nats-server reserves it out of its own
// max_file_store: a server with less refuses the account JetStream.
func (s Sizing) DiskBytes() int64 { return hostDiskBytes * int64(s.MaxHosts) }

// MemoryBytes is the account's limit on memory storage. ikto's buckets are
// file streams and it makes no others, so none: a memory stream is refused.
// The watches' ordered consumers keep their state in memory too, but the
// server does not count consumers against this limit.
func (s Sizing) MemoryBytes() int64 { return 0 }

// AccountLimits are the limits of the mesh account's JWT. What they leave
// unlimited, and why:
//   - subscriptions, payload and data of the account as a whole: the host
//     users carry their own (HostLimits); the operator's users have none;
//   - leaf node connections: ikto makes none, but a deployment may put
//     servers of its own between hosts and the hub;
//   - imports and exports: they limit what the account JWT may declare,
//     which only the operator signs;
//   - max ack pending: the watches acknowledge nothing, and a consumer's
//     pending acknowledgements are bounded by the stream's messages (one
//     per key) anyway;
//   - bytes per stream: ikto's streams have no MaxBytes, which such a limit
//     does not change; the account's DiskBytes bounds them together.
func (s Sizing) AccountLimits() (jwt.OperatorLimits, error) {
	if err := s.Check(); err != nil {
		return jwt.OperatorLimits{}, err
	}
	return jwt.OperatorLimits{
		NatsLimits: jwt.NatsLimits{Subs: jwt.NoLimit, Data: jwt.NoLimit, Payload: jwt.NoLimit},
		AccountLimits: jwt.AccountLimits{
			Imports: jwt.NoLimit, Exports: jwt.NoLimit, WildcardExports: true,
			Conn: s.Connections(), LeafNodeConn: jwt.NoLimit,
		},
		JetStreamLimits: jwt.JetStreamLimits{
			MemoryStorage: s.MemoryBytes(),
			DiskStorage:   s.DiskBytes(),
			Streams:       s.Streams(),
			Consumer:      s.ConsumersPerStream(),
		},
	}, nil
}

// The limits on each enrolled host's user (HostLimits), per connection.
const (
	// HostMaxSubscriptions bounds one connection's subscriptions. ikto-agent
	// holds five at once (pkg/agent's TestEnrolledAgentSubscriptions
	// measures it through a start and a reconnect, and fails above a
	// quarter of this limit): its reply inbox, the watch's deliveries, the
	// stream's advisories, and the stream's purge and message-delete
	// requests (to hear of a purge); a scan of the bucket while it claims
	// adds one for a moment. A reconnect sends them again on a new connection, which
	// counts from zero. Six times that leaves room for nats.go to change.
	HostMaxSubscriptions = 32
	// HostMaxPayload bounds one message a host publishes, headers included.
	// The largest a real host sends is a heartbeat: its name, at most
	// bucket.MaxUnreachable public keys (Heartbeat.Encode cuts the list)
	// and a few small fields, under 8 KiB even with a name as long as a
	// whole record. A record is at most peer.MaxValueSize (4096 bytes) or
	// peers reject it. JetStream API requests are under 1 KiB. nats-server
	// tells the client this limit, and nats.go refuses to send more
	// (nats.ErrMaxPayload); a client that sends more anyway is
	// disconnected.
	HostMaxPayload = 16 << 10
)

// HostLimits are the NATS limits of an enrolled host's user. The server
// does not enforce a user's data limit, so it stays unlimited.
func HostLimits() jwt.NatsLimits {
	return jwt.NatsLimits{Subs: HostMaxSubscriptions, Data: jwt.NoLimit, Payload: HostMaxPayload}
}
