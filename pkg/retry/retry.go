// Package retry is ikto's one backoff policy. Everything that waits before
// trying again — claiming, opening the bucket, re-subscribing a watch,
// reconnecting to NATS, restarting a hook — takes its delays from a Policy,
// so a fleet that lost its server comes back spread out rather than in lock
// step, and one change here tunes all of them. The delays come from
// cenkalti/backoff's exponential back-off.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy is an exponential back-off from Min, doubling up to Max, each delay
// jittered by ±Jitter of itself (0 means the default of ±50 %).
type Policy struct {
	Min, Max time.Duration
	Jitter   float64
}

// Standard is what a control-plane operation of the agent uses.
var Standard = Policy{Min: 250 * time.Millisecond, Max: 10 * time.Second}

// defaultJitter spreads a fleet's retries over half to one and a half times
// the nominal delay.
const defaultJitter = 0.5

// New returns a fresh back-off following p. It is not safe for concurrent use.
func (p Policy) New() *backoff.ExponentialBackOff {
	j := p.Jitter
	if j <= 0 {
		j = defaultJitter
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.Min,
		RandomizationFactor: j,
		Multiplier:          2,
		MaxInterval:         p.Max,
	}
	b.Reset()
	return b
}

// Permanent marks err as final: Do returns it (unwrapped) without retrying.
func Permanent(err error) error { return backoff.Permanent(err) }

// Do calls f until it succeeds, returns an error marked Permanent, or ctx
// ends; it never gives up on its own. Each attempt gets its own context
// bounded by attempt (0: none). notify, when set, is told of each failure
// and the delay before the next attempt.
func Do(ctx context.Context, p Policy, attempt time.Duration, notify func(n int, err error, next time.Duration), f func(context.Context) error) error {
	n := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		n++
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attempt > 0 {
			actx, cancel = context.WithTimeout(ctx, attempt)
		}
		defer cancel()
		return struct{}{}, f(actx)
	},
		backoff.WithBackOff(p.New()),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			if notify != nil {
				notify(n, err, next)
			}
		}),
	)
	return err
}
