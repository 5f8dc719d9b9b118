// Package logbuf is a log sink for tests: the code under test writes to it
// from its goroutines while the test reads it, as text or, for a hook's
// hclog JSON lines, message by message.
package logbuf

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// Buffer is an io.Writer whose contents may be read while it is written.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// New is a Buffer whose contents the test logs, under the heading what, if
// it fails.
func New(t testing.TB, what string) *Buffer {
	b := &Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:\n%s", what, b)
		}
	})
	return b
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Contains reports whether sub has been written.
func (s *Buffer) Contains(sub string) bool { return strings.Contains(s.String(), sub) }

// Entries are the JSON lines written so far (hclog's JSONFormat) whose
// "@message" is msg, decoded.
func (s *Buffer) Entries(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.String(), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["@message"] == msg {
			out = append(out, e)
		}
	}
	return out
}
