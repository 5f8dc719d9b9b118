package natsserver

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// keptErrors is how many of a server's last errors a failed start reports.
const keptErrors = 4

// errorLog is the logger every embedded server gets: it passes each line to
// the caller's logger, if any, and keeps the last errors and fatal errors,
// so that a server that never becomes ready (a port taken between picking
// and listening, a store it cannot open) says why instead of only "not
// ready".
type errorLog struct {
	next server.Logger // nil: lines other than errors are dropped

	mu   sync.Mutex
	last []string
}

func (l *errorLog) keep(format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.last) == keptErrors {
		l.last = append(l.last[:0], l.last[1:]...)
	}
	l.last = append(l.last, fmt.Sprintf(format, v...))
}

// errors is the kept errors, oldest first, joined for an error message;
// empty when the server logged none.
func (l *errorLog) errors() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "; ")
}

func (l *errorLog) Errorf(format string, v ...any) {
	l.keep(format, v)
	if l.next != nil {
		l.next.Errorf(format, v...)
	}
}

func (l *errorLog) Fatalf(format string, v ...any) {
	l.keep(format, v)
	if l.next != nil {
		l.next.Fatalf(format, v...)
	}
}

func (l *errorLog) Noticef(format string, v ...any) {
	if l.next != nil {
		l.next.Noticef(format, v...)
	}
}

func (l *errorLog) Warnf(format string, v ...any) {
	if l.next != nil {
		l.next.Warnf(format, v...)
	}
}

func (l *errorLog) Debugf(format string, v ...any) {
	if l.next != nil {
		l.next.Debugf(format, v...)
	}
}

func (l *errorLog) Tracef(format string, v ...any) {
	if l.next != nil {
		l.next.Tracef(format, v...)
	}
}

var _ server.Logger = (*errorLog)(nil)
