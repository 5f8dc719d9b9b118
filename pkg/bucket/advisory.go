package bucket

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// advisoryPrefix is where JetStream announces what happens to streams:
// $JS.EVENT.ADVISORY.STREAM.<CREATED|DELETED|UPDATED>.<stream>.
const advisoryPrefix = "$JS.EVENT.ADVISORY.STREAM."

// AdvisorySubject is the subject a host subscribes to for news of the
// bucket's stream (the permission a least-privilege user needs for it).
func AdvisorySubject(bucket string) string { return advisoryPrefix + "*.KV_" + bucket }

// FollowStream tells of the bucket's stream being deleted or made (again),
// from JetStream's advisories, until ctx ends: a KV watch does not notice
// either. It costs nothing while nothing happens. A server that refuses the
// subscription makes it useless, not fatal: the watch's probe finds the same,
// only later.
func (c *Conn) FollowStream(ctx context.Context, deleted, created func()) error {
	subject := AdvisorySubject(c.nats.Bucket)
	sub, err := c.NC.Subscribe(subject, func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, advisoryPrefix+"DELETED."):
			deleted()
		case strings.HasPrefix(m.Subject, advisoryPrefix+"CREATED."):
			created()
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}
