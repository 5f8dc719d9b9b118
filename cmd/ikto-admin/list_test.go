package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The rows below the table, one per record that is not valid, are a table
// of their own: keys of any length (a revocation's is longer than a
// record's), a revision or "-", and a detail that may carry a tab from a
// record's fields, all in aligned columns.
func TestWhyTableLayout(t *testing.T) {
	rows := []row{
		{Key: "peers.fd10-1--48", State: stateValid, Revision: 1},
		{Key: "peers.fd10-4--48", State: stateRejected, Revision: 4, Detail: "wg_port 0 is not 1-65535"},
		{Key: "revoked.GKQ1f0oRrq7aOhuo2a8-kS0-5e4XbT4fdhsLU1pEBHk", State: stateRevoked, Detail: "evicted 2026-11-24T11:00:00Z; no record left"},
		{Key: "peers.fd10-12--48", State: stateRevoked, Revision: 12345, Detail: "name \"a\tb\" is revoked"},
	}
	var b bytes.Buffer
	if err := writeWhyTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := `
KEY                                                  STATE     REVISION  WHY
peers.fd10-4--48                                     rejected  4         wg_port 0 is not 1-65535
revoked.GKQ1f0oRrq7aOhuo2a8-kS0-5e4XbT4fdhsLU1pEBHk  revoked   -         evicted 2026-11-24T11:00:00Z; no record left
peers.fd10-12--48                                    revoked   12345     "name \"a\tb\" is revoked"
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("why table (-want +got):\n%s", diff)
	}
	for _, column := range []string{"STATE", "REVISION", "WHY"} {
		at := strings.Index(strings.Split(want, "\n")[1], column)
		for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n")[1:] {
			if len(line) <= at || line[at-1] != ' ' || line[at] == ' ' {
				t.Errorf("column %s does not start at %d in %q", column, at, line)
			}
		}
	}

	b.Reset()
	if err := writeWhyTable(&b, rows[:1]); err != nil || b.Len() != 0 {
		t.Errorf("every record valid: printed %q (%v), want nothing", b.String(), err)
	}
}
