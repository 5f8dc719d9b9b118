// Package testkit is what every test of the repository waits with: one
// polling loop with a deadline (Poll), and Eventually and EventuallyContext,
// which fail a test with what it was waiting for and the last reason it was
// not so yet. It depends on the standard library only, so that any module
// can import it; the embedded NATS server lives in natsserver (no
// testing.TB, for the harness and benchmarks) and natstest (for tests).
package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// A condition is re-checked soon at first, because most waits in unit tests
// end within milliseconds, and then less often, so that a long wait on
// agents in namespaces does not hammer their status sockets.
const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 100 * time.Millisecond
	// attemptLimit is the least time one call of a condition gets.
	attemptLimit = 5 * time.Second
)

// Poll calls cond until it returns nil, ctx ends, or timeout passes. cond
// returns why the wait is not over yet; that last reason is in the error
// when the wait gives up, so a failed wait says what was missing. An error
// marked with Permanent ends the wait at once. cond's context ends with the
// wait, so a condition that does I/O cannot outlast it; and one call ends
// after a third of the wait (at least attemptLimit), so a request lost in a
// reconnect, which no reply ever ends, costs one attempt, not the whole wait.
func Poll(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) error) error {
	timeout = Scaled(timeout)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := firstInterval
	timer := time.NewTimer(interval)
	defer timer.Stop()
	perAttempt := max(Scaled(attemptLimit), timeout/3)
	for {
		actx, acancel := context.WithTimeout(ctx, perAttempt)
		last := cond(actx)
		acancel()
		if last == nil {
			return nil
		}
		var perm *permanentError
		if errors.As(last, &perm) {
			return perm.err
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", time.Since(start).Round(time.Millisecond), last)
		case <-timer.C:
		}
		interval = min(2*interval, maxInterval)
	}
}

// Eventually polls cond until it returns nil and fails the test if timeout
// passes first, naming what it waited for and cond's last error. Call it
// from the test's goroutine: it stops the test with Fatal.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	EventuallyContext(tb, timeout, what, func(context.Context) error { return cond() })
}

// EventuallyContext is Eventually for a condition that does I/O (a status
// request, a bucket read, a ping) and must stop when the wait does.
func EventuallyContext(tb testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	tb.Helper()
	// Not tb.Context(): that ends before cleanups run, and a cleanup may
	// wait too.
	if err := Poll(context.Background(), timeout, cond); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks a condition's error as final: the wait returns it (or
// fails the test with it) at once instead of polling on, as for an agent
// that exited and so will never converge.
func Permanent(err error) error { return &permanentError{err: err} }

// errNotYet is a True condition's reason for going on.
var errNotYet = errors.New("condition still false")

// True adapts a yes/no condition to Eventually, for checks that have no
// better reason to give than "not yet".
func True(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

// TimeScaleEnv stretches every bound of Poll and Eventually on a slow
// machine: a number, 1 (the default) or more. The kernel lane sets it, since
// its guest runs on emulated CPUs.
const TimeScaleEnv = "IKTO_TEST_TIME_SCALE"

// TimeScale is TimeScaleEnv's value, 1 when it is unset or not a number >= 1.
func TimeScale() float64 {
	f, err := strconv.ParseFloat(os.Getenv(TimeScaleEnv), 64)
	if err != nil || f < 1 {
		return 1
	}
	return f
}

// Scaled is d multiplied by TimeScale.
func Scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * TimeScale())
}
