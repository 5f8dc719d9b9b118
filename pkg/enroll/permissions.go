// Package enroll makes the NATS identity of one enrolled host: the subjects
// its user may publish and subscribe to, the user JWT that carries them,
// signed with the mesh's account key, the .creds file, and the revocation of
// that user in the account JWT. With these permissions a host can write its
// own claim and heartbeat, read and watch the mesh and read the heartbeats,
// and nothing else: not another host's record or heartbeat, not revoked.*,
// not the buckets' streams, not another host's replies. It is pure: it reads
// no files and dials nothing.
package enroll

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Host is what a host's permissions depend on.
type Host struct {
	// Bucket is the mesh's bucket (nats_kv); its heartbeat bucket is
	// bucket.LiveBucket(Bucket).
	Bucket string
	// Prefix is the host's claim.
	Prefix netip.Prefix
	// InboxPrefix is the host's nats_inbox_prefix (see InboxPrefix).
	InboxPrefix string
}

// Subjects are the subjects a NATS user may publish and subscribe to.
type Subjects struct {
	Publish   []string
	Subscribe []string
}

// InboxPrefix is the inbox prefix of the NATS user userKey (its public
// nkey): unique per user, so a subscribe permission "<prefix>.>" covers
// this host's replies and no one else's.
func InboxPrefix(userKey string) string { return "_INBOX_" + userKey }

// Permissions are the subjects an enrolled host's user may use: what
// ikto-agent and the read-only ikto-admin commands (list, health, prune
// --dry-run; status asks the agent, not NATS) send, read-only but for the
// host's own claim and heartbeat. They are the subjects nats.go v1.55 sent
// to nats-server 2.9.10 and 2.15.2 in an enrolled mesh that hosts joined and
// left, whose agents and server restarted, and where a copy of one host's
// key sat on another's claim (integration/enroll_violations_test.go, and
// the traces in permissions_test.go). Both servers take
// CONSUMER.CREATE.<stream>.<name>.<filter>, which the ".>" lines cover;
// nothing here needs a newer server.
func Permissions(h Host) (Subjects, error) {
	if err := h.check(); err != nil {
		return Subjects{}, err
	}
	liveBucket := bucket.LiveBucket(h.Bucket)
	stream, live := "KV_"+h.Bucket, "KV_"+liveBucket
	api := "$JS.API."
	pub := []string{
		// The account check nats.go makes before creating a bucket: read
		// only, and it lets a host's refused attempt to create a missing
		// bucket be refused (and logged) as the STREAM.CREATE it is.
		api + "INFO",
		// Binding the buckets, the watch's probe of the stream's state and
		// settings, and health's look at both streams.
		api + "STREAM.INFO." + stream,
		api + "STREAM.INFO." + live,
		// Reading one key: DIRECT.GET.<stream>.<subject> on buckets with
		// direct get (every bucket nats.go made since 2.9), MSG.GET on
		// buckets made without it (by older clients).
		api + "DIRECT.GET." + stream + ".>",
		api + "STREAM.MSG.GET." + stream,
		// Following the bucket (bucket.FollowSubject): reading its
		// messages in sequence order, a batch at a time, for the snapshot
		// and to mend a hole in what was republished.
		api + "DIRECT.GET." + stream,
		// The scans of the bucket (list, evict's lookup, the claim's look
		// for copies) and the watch of a bucket that does not republish:
		// an ordered consumer, its flow control, its removal.
		api + "CONSUMER.CREATE." + stream + ".>",
		api + "CONSUMER.DELETE." + stream + ".>",
		"$JS.FC." + stream + ".>",
		// Reading a heartbeat (ikto-admin list, health and prune run with
		// a host's credentials too). No MSG.GET: the heartbeat bucket came
		// after direct get, and agents and init-bucket make it with direct
		// get on.
		api + "DIRECT.GET." + live + ".>",
		// Scanning the heartbeats (bucket.Heartbeats: list, health and
		// prune): an
		// ordered consumer, removed when the scan ends, and its flow
		// control, which the server asks for once a scan passes 1 MiB (a
		// few thousand hosts).
		api + "CONSUMER.CREATE." + live + ".>",
		api + "CONSUMER.DELETE." + live + ".>",
		"$JS.FC." + live + ".>",
		// Writes: only this host's claim and heartbeat. A delete or purge
		// of a key is a message on the key's own subject, so this also
		// keeps the host from deleting any record but its own.
		"$KV." + h.Bucket + "." + peer.Key(h.Prefix),
		"$KV." + liveBucket + "." + bucket.HeartbeatKey(h.Prefix),
	}
	sub := []string{
		// Replies to requests, and the deliveries of the watch and the
		// scans: this host's own inbox prefix only.
		h.InboxPrefix + ".>",
		// News of the bucket's stream being deleted, made again or changed.
		bucket.AdvisorySubject(h.Bucket),
		// What the bucket's stream republishes: every record, revocation
		// and delete marker as it is stored, which the host may read
		// anyway. Subscribe only: a host that could publish here could
		// feed the other agents messages the stream never stored.
		bucket.FollowSubject(h.Bucket),
	}
	// Purges and message deletions asked of the bucket's stream, which
	// remove records without a watch event: the agent hears the request
	// (bucket.FollowStream) and reads the bucket again. Hearing a request
	// is not sending it, and it carries nothing secret.
	sub = append(sub, bucket.RemovalSubjects(h.Bucket)...)
	return Subjects{Publish: pub, Subscribe: sub}, nil
}

func (h Host) check() error {
	if !config.ValidBucketName(h.Bucket) {
		return fmt.Errorf("bucket %q is not a valid bucket name", h.Bucket)
	}
	if !h.Prefix.IsValid() || h.Prefix.Masked() != h.Prefix {
		return fmt.Errorf("prefix %s is not a canonical prefix", h.Prefix)
	}
	if !config.ValidInboxPrefix(h.InboxPrefix) || strings.HasPrefix(h.InboxPrefix+".", "_INBOX.") {
		// The shared "_INBOX" would let every host that has it read the
		// replies of every other.
		return fmt.Errorf("inbox prefix %q is not a per-host subject prefix", h.InboxPrefix)
	}
	return nil
}
