package integration_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// subjectTrace records, as the operator, what enrolled hosts send: the
// requests and writes whose replies come under an enrolled inbox
// (_INBOX_U…, agents and ikto-admin -c), and the flow control of the
// consumers they made.
type subjectTrace struct {
	mu        sync.Mutex
	shapes    map[string]string // shape → the first subject of that shape
	consumers map[string]bool   // consumers made by enrolled hosts
}

// Parts of a subject that change from run to run, and what a shape shows
// instead.
var traceNormal = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`^(\$JS\.API\.CONSUMER\.(CREATE|DELETE)\.KV_[^.]+)\.[^.]+`), "$1.<name>"},
	{regexp.MustCompile(`^(\$JS\.FC\.KV_[^.]+)\..*`), "$1.<name>.<n>"},
	{regexp.MustCompile(`\.(peers|hb|revoked)\.[^.>][^.]*$`), ".$1.<key>"},
}

func traceSubjects(t *testing.T, w *enrollWorld) *subjectTrace {
	t.Helper()
	tr := &subjectTrace{shapes: map[string]string{}, consumers: map[string]bool{}}
	nc, err := nats.Connect(w.srv.URL(), nats.UserCredentials(w.adminCreds), nats.Name("ikto-test-trace"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	for _, subject := range []string{"$JS.API.>", "$JS.FC.>", "$KV.>"} {
		if _, err := nc.Subscribe(subject, tr.note); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func (tr *subjectTrace) note(m *nats.Msg) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tokens := strings.Split(m.Subject, ".")
	switch {
	case strings.HasPrefix(m.Subject, "$JS.FC.") && len(tokens) > 3 && tr.consumers[tokens[3]]:
	case !strings.HasPrefix(m.Reply, "_INBOX_U"):
		return
	case strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.CREATE.") && len(tokens) > 5:
		tr.consumers[tokens[5]] = true
	}
	shape := m.Subject
	for _, n := range traceNormal {
		shape = n.re.ReplaceAllString(shape, n.with)
	}
	if _, ok := tr.shapes[shape]; !ok {
		tr.shapes[shape] = m.Subject
	}
}

func (tr *subjectTrace) write(t *testing.T, path, kind string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	shapes := slices.Sorted(maps.Keys(tr.shapes))
	var b strings.Builder
	fmt.Fprintf(&b, "# nats-server %s: %d shapes\n", kind, len(shapes))
	for _, s := range shapes {
		fmt.Fprintf(&b, "%s\t%s\n", s, tr.shapes[s])
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err == nil {
		_, err = f.WriteString(b.String())
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("%s: %v", envViolationsTrace, err)
	}
}
