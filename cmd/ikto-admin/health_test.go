package main

import (
	"net/netip"
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
		host("delta", "D=", "fd10:4::/48"), host("echo", "E=", "fd10:5::/48"),
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
	got := judgeHealth(rows, hbs, 40, lastAt, now)
	want := health{
		OK: false, Revision: 40, Hosts: 5,
		Behind:      []behindHost{{Name: "bravo", PublicKey: "B=", Applied: 38}},
		Unreachable: []unreachablePair{{From: "alpha", To: "bravo", FromKey: "A=", ToKey: "B="}},
		Silent:      []silentHost{{Name: "charlie", PublicKey: "C=", LastHeartbeat: now.Add(-2 * time.Minute)}},
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
