package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

func TestJudgeHealth(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	lastAt := now.Add(-time.Minute)
	host := func(name, key, prefix string) row {
		return row{Record: peer.Record{Name: name, PublicKey: key, AllowedIP: prefix}, State: stateValid}
	}
	rows := []row{
		host("alpha", "A=", "fd10:1::/48"), host("bravo", "B=", "fd10:2::/48"), host("charlie", "C=", "fd10:3::/48"),
		host("delta", "D=", "fd10:4::/48"), host("echo", "E=", "fd10:5::/48"), host("foxtrot", "F=", "fd10:7::/48"),
		host("golf", "G=", "fd10:8::/48"),
		{Record: peer.Record{Name: "mallory", PublicKey: "M=", AllowedIP: "fd10:6::/48"}, State: stateRejected},
	}
	hb := func(key string, ago time.Duration, rev uint64, unreachable ...string) bucket.Heartbeat {
		return bucket.Heartbeat{PublicKey: key, At: now.Add(-ago), Revision: rev, Unreachable: unreachable}
	}
	hbs := map[netip.Prefix]bucket.Heartbeat{
		netip.MustParsePrefix("fd10:1::/48"): hb("A=", 5*time.Second, 40, "B=", "GONE="), // a cut pair; a peer that left
		netip.MustParsePrefix("fd10:2::/48"): hb("B=", 5*time.Second, 38),                // behind
		netip.MustParsePrefix("fd10:3::/48"): hb("C=", 2*time.Minute, 10),                // silent
		netip.MustParsePrefix("fd10:4::/48"): hb("D=", 5*time.Second, 40),
		// echo never wrote a heartbeat (an ikto 0.3.0 agent)
	}
	// foxtrot's key runs twice; golf's did, but golf went silent since.
	twin := &bucket.Duplicate{Writer: bucket.Writer{Instance: "bbbb", Addr: "198.18.0.9"}, Since: now.Add(-time.Minute)}
	fox := hb("F=", 5*time.Second, 40)
	fox.Writer, fox.Duplicate = bucket.Writer{Instance: "aaaa", Addr: "198.18.0.8"}, twin
	golf := hb("G=", 2*time.Minute, 40)
	golf.Duplicate = twin
	hbs[netip.MustParsePrefix("fd10:7::/48")], hbs[netip.MustParsePrefix("fd10:8::/48")] = fox, golf
	got := judgeHealth(rows, hbs, 40, lastAt, now)
	want := health{
		OK: false, Revision: 40, Hosts: 7,
		Behind:      []behindHost{{Name: "bravo", PublicKey: "B=", Applied: 38}},
		Unreachable: []unreachablePair{{From: "alpha", To: "bravo", FromKey: "A=", ToKey: "B="}},
		Silent: []silentHost{{Name: "charlie", PublicKey: "C=", LastHeartbeat: now.Add(-2 * time.Minute)},
			{Name: "golf", PublicKey: "G=", LastHeartbeat: now.Add(-2 * time.Minute)}},
		Duplicate:   []duplicateHost{{Name: "foxtrot", PublicKey: "F=", Writer: fox.Writer, Other: twin.Writer, Since: twin.Since}},
		NoHeartbeat: []string{"echo"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("judgeHealth (-want +got):\n%s", d)
	}

	// A heartbeat written before the last change cannot show it yet.
	early := map[netip.Prefix]bucket.Heartbeat{netip.MustParsePrefix("fd10:1::/48"): {PublicKey: "A=", At: lastAt.Add(-time.Second), Revision: 39}}
	if h := judgeHealth(rows[:1], early, 40, lastAt, lastAt.Add(5*time.Second)); !h.OK {
		t.Errorf("a beat from before the change counted: %+v", h)
	}
}

// TestHealthDuplicateAlone: a key run twice is enough to make the fleet
// unhealthy, and the table names both agents and the fix.
func TestHealthDuplicateAlone(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rows := []row{{Record: peer.Record{Name: "alpha", PublicKey: "A=", AllowedIP: "fd10:1::/48"}, State: stateValid}}
	hb := bucket.Heartbeat{PublicKey: "A=", At: now.Add(-time.Second), Revision: 40, Writer: bucket.Writer{Instance: "aaaa", Addr: "198.18.0.2"},
		Duplicate: &bucket.Duplicate{Writer: bucket.Writer{Instance: "bbbb", Addr: "198.18.0.3"}, Since: now.Add(-time.Minute)}}
	h := judgeHealth(rows, map[netip.Prefix]bucket.Heartbeat{netip.MustParsePrefix("fd10:1::/48"): hb}, 40, now.Add(-time.Hour), now)
	if h.OK || len(h.Duplicate) != 1 {
		t.Fatalf("judgeHealth = %+v, want one duplicate and not OK", h)
	}
	var out strings.Builder
	if err := writeHealth(&out, h); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"duplicate", "alpha", "aaaa at 198.18.0.2", "bbbb at 198.18.0.3", "ikto-init"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("health table lacks %q:\n%s", w, out.String())
		}
	}
}
