// Package enroll makes the NATS identity of one enrolled host: the subjects
// its user may publish and subscribe to, the user JWT that carries them,
// signed with the mesh's account key, the .creds file, and the revocation of
// that user in the account JWT. With these permissions a host can write its
// own claim and heartbeat and read and watch the mesh, and nothing else: not
// another host's record, not revoked.*, not the buckets' streams, not
// another host's replies. It is pure: it reads no files and dials nothing.
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

// Permissions are the subjects an enrolled host's user may use. The
// JetStream API subjects are those that ikto-agent (nats.go v1.55) sends to
// nats-server 2.9 and to 2.10 and later, which differ in how a consumer is
// created: 2.9 and later take CONSUMER.CREATE.<stream>.<name>[.<filter>],
// which the ".>" lines cover; nothing here needs a newer server.
func Permissions(h Host) (Subjects, error) {
	if err := h.check(); err != nil {
		return Subjects{}, err
	}
	stream, live := "KV_"+h.Bucket, "KV_"+bucket.LiveBucket(h.Bucket)
	api := "$JS.API."
	pub := []string{
		// The account check nats.go makes before creating a bucket: read
		// only, and it lets a host's refused attempt to create a missing
		// bucket be refused (and logged) as the STREAM.CREATE it is.
		api + "INFO",
		// Binding the buckets (and the watch's probe of the stream's state).
		api + "STREAM.INFO." + stream,
		api + "STREAM.INFO." + live,
		// Reading one key: DIRECT.GET.<stream>.<subject> on buckets with
		// direct get (every bucket nats.go made since 2.9), MSG.GET on
		// buckets made without it (by older clients).
		api + "DIRECT.GET." + stream + ".>",
		api + "STREAM.MSG.GET." + stream,
		// The watch: an ordered consumer, its flow control, its removal.
		api + "CONSUMER.CREATE." + stream + ".>",
		api + "CONSUMER.DELETE." + stream + ".>",
		"$JS.FC." + stream + ".>",
		// Writes: only this host's claim and heartbeat. A delete or purge
		// of a key is a message on the key's own subject, so this also
		// keeps the host from deleting any record but its own.
		"$KV." + h.Bucket + "." + peer.Key(h.Prefix),
		"$KV." + bucket.LiveBucket(h.Bucket) + "." + bucket.HeartbeatKey(h.Prefix),
	}
	sub := []string{
		h.InboxPrefix + ".>",
		bucket.AdvisorySubject(h.Bucket),
	}
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
