package testkit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), 10*time.Second, func(context.Context) error {
		calls++
		if calls < 4 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("Poll = %v after %d calls, want nil after 4", err, calls)
	}
}

func TestPollGivesUpWithTheLastReason(t *testing.T) {
	calls := 0
	start := time.Now()
	err := Poll(context.Background(), 200*time.Millisecond, func(ctx context.Context) error {
		calls++
		return fmt.Errorf("call %d", calls)
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("call %d", calls)) {
		t.Fatalf("Poll = %v, want the last reason (call %d)", err, calls)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("gave up after %s, before the timeout", d)
	}
	// The interval grows from 5 ms to 100 ms: a few calls, not a busy loop.
	if calls < 3 || calls > 15 {
		t.Errorf("%d calls in 200ms, want a handful", calls)
	}
}

func TestPollStopsAtAPermanentError(t *testing.T) {
	final := errors.New("the agent exited")
	calls := 0
	err := Poll(context.Background(), 10*time.Second, func(context.Context) error {
		calls++
		return Permanent(fmt.Errorf("wrapped: %w", final))
	})
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want the permanent error after 1", err, calls)
	}
}

func TestPollEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Poll(ctx, 10*time.Second, func(ctx context.Context) error { return ctx.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll on a cancelled context = %v, want context.Canceled", err)
	}
}

// fatalTB records the message a helper fails the test with and stops the
// goroutine, as testing.T's FailNow does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyFailsNamingWhatAndWhy(t *testing.T) {
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(tb, 50*time.Millisecond, "the peer to appear", func() error { return errors.New("0 peers") })
	}()
	<-done
	for _, want := range []string{"the peer to appear", "0 peers"} {
		if !strings.Contains(tb.msg, want) {
			t.Errorf("failure %q does not mention %q", tb.msg, want)
		}
	}
}

func TestEventuallyTrue(t *testing.T) {
	n := 0
	Eventually(t, 10*time.Second, "the third call", True(func() bool { n++; return n == 3 }))

	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(tb, 20*time.Millisecond, "never", True(func() bool { return false }))
	}()
	<-done
	if !strings.Contains(tb.msg, "never") {
		t.Errorf("failure %q does not say what it waited for", tb.msg)
	}
}
