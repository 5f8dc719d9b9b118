// Package logbuf is a log sink for the pkg module's tests: the code under
// test writes to it from its goroutines while the test reads it.
package logbuf

import (
	"strings"
	"sync"
)

// Buffer is an io.Writer whose contents may be read while it is written.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
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
