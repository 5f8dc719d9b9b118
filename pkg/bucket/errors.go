package bucket

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// ErrPermission is matched by an error the NATS server answered with a
// permissions violation: a configuration problem retrying cannot fix.
var ErrPermission = errors.New("denied by the NATS server's permissions")

// ErrRevoked is returned by Claim when the claiming key has a revoked.*
// record: putting its record back would leave a claim every agent rejects.
var ErrRevoked = errors.New("public key is revoked")

// ErrAddressInUse is matched (errors.Is) by an *InUseError.
var ErrAddressInUse = errors.New("address in use")

// InUseError says which host holds the prefix another host tried to claim.
type InUseError struct {
	Prefix netip.Prefix
	Holder peer.Record
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address in use: prefix %s is held by %q (public key %s); pick another with ikto-init or evict that host",
		e.Prefix, e.Holder.Name, e.Holder.PublicKey)
}

// Is makes errors.Is(err, ErrAddressInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrAddressInUse }

// ErrBucketMissing is returned by OpenBucket when the bucket does not exist and
// the caller did not ask to create it, or creating it failed (then the error
// also matches the cause, e.g. ErrPermission after Conn.Explain).
var ErrBucketMissing = errors.New("bucket does not exist")

// ErrReplicasNotSupported is returned by OpenBucket when it was asked for a
// replicated bucket on a server that is not part of a JetStream cluster: a
// configuration error that retrying cannot fix.
var ErrReplicasNotSupported = errors.New("the NATS server is not a JetStream cluster")

// ErrStoreFailed is matched by a write the server refused because the
// bucket's stream could not store it (err_code 10077). One such stream is
// broken for good: nats-server 2.9 goes on removing a deleted stream's files
// after the deletion answers, and takes the files of a stream of the same
// name made in the meantime. The keeper mends it (Keeper, DeletionSettle).
var ErrStoreFailed = errors.New("the bucket's stream could not store the write")

// ErrNoJetStream is matched by a request no JetStream answered: the server
// runs without JetStream, or the credentials belong to an account without
// it. Both look like timeouts or "no responders" otherwise.
var ErrNoJetStream = errors.New("no JetStream answers for these credentials: enable JetStream on the NATS server (jetstream {} in its config, or -js), or use credentials of an account that has it")
