package bucket

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// advisoryPrefix is where JetStream announces what happens to streams:
// $JS.EVENT.ADVISORY.STREAM.<CREATED|DELETED|UPDATED>.<stream>.
const advisoryPrefix = "$JS.EVENT.ADVISORY.STREAM."

// AdvisorySubject is the subject a host subscribes to for news of the
// bucket's stream (the permission a least-privilege user needs for it).
func AdvisorySubject(bucket string) string { return advisoryPrefix + "*.KV_" + bucket }

// RemovalSubjects are the JetStream API requests that remove messages from
// the bucket's stream without a watch event: a purge and a message
// deletion. A host subscribes to them (it may not send them) to hear of a
// removal at once; the requests carry nothing secret.
func RemovalSubjects(bucket string) []string {
	return []string{"$JS.API.STREAM.PURGE.KV_" + bucket, "$JS.API.STREAM.MSG.DELETE.KV_" + bucket}
}

// StreamEvents are what FollowStream tells of. Any of them may be nil.
type StreamEvents struct {
	// Deleted: the bucket's stream was deleted.
	Deleted func()
	// Created: it was made (again).
	Created func()
	// Changed: its settings were updated, or someone asked the server to
	// remove messages from it (RemovalSubjects): the watch should look at
	// the stream again.
	Changed func()
}

// FollowStream tells of what happens to the bucket's stream, from
// JetStream's advisories and the removal requests, until ctx ends: a KV
// watch notices none of it. It costs nothing while nothing happens. A server
// that refuses a subscription makes it useless, not fatal: the watch's
// probe finds the same, only later.
func (c *Conn) FollowStream(ctx context.Context, ev StreamEvents) error {
	call := func(f func()) {
		if f != nil {
			f()
		}
	}
	subjects := append([]string{AdvisorySubject(c.nats.Bucket)}, RemovalSubjects(c.nats.Bucket)...)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, subject := range subjects {
		// A message is judged by its own subject: a consumer delivering
		// there (any host may make one) brings messages whose subject is
		// the stream's, which mean nothing here.
		sub, err := c.NC.Subscribe(subject, func(m *nats.Msg) {
			switch {
			case strings.HasPrefix(m.Subject, advisoryPrefix+"DELETED."):
				call(ev.Deleted)
			case strings.HasPrefix(m.Subject, advisoryPrefix+"CREATED."):
				call(ev.Created)
			case strings.HasPrefix(m.Subject, advisoryPrefix+"UPDATED."), slices.Contains(subjects[1:], m.Subject):
				call(ev.Changed)
			}
		})
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	return nil
}
