package mesh

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestTwinsBeat(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	self := HeartbeatWriter{Key: "K", Instance: "a"}
	twin := &HeartbeatWriter{Key: "K", Instance: "b"}
	type beat struct {
		at    time.Duration
		other *HeartbeatWriter
		want  TwinChange
	}
	for _, tc := range []struct {
		name  string
		beats []beat
		live  bool
	}{
		{"alone", []beat{{0, nil, TwinNone}, {HeartbeatEvery, nil, TwinNone}}, false},
		{"our own write found again (an ack lost)", []beat{{0, &self, TwinNone}}, false},
		{"another key: a contest for the prefix, no twin", []beat{{0, &HeartbeatWriter{Key: "L", Instance: "b"}, TwinNone}}, false},
		{"a twin", []beat{{0, twin, TwinStarted}, {HeartbeatEvery, twin, TwinNone}}, true},
		{"an agent without an instance id, with our key", []beat{{0, &HeartbeatWriter{Key: "K"}, TwinStarted}}, true},
		{"another twin", []beat{{0, twin, TwinStarted}, {HeartbeatEvery, &HeartbeatWriter{Key: "K", Instance: "c"}, TwinChanged}}, true},
		{"one beat without it is jitter", []beat{{0, twin, TwinStarted}, {HeartbeatEvery, nil, TwinNone}, {2 * HeartbeatEvery, twin, TwinNone}}, true},
		{"gone after TwinHold", []beat{{0, twin, TwinStarted}, {TwinHold - time.Millisecond, nil, TwinNone}, {TwinHold, nil, TwinEnded}, {TwinHold + HeartbeatEvery, nil, TwinNone}}, false},
		{"back after its end", []beat{{0, twin, TwinStarted}, {TwinHold, nil, TwinEnded}, {TwinHold + HeartbeatEvery, twin, TwinStarted}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tw Twins
			for i, b := range tc.beats {
				if got := tw.Beat(t0.Add(b.at), self, b.other); got != b.want {
					t.Errorf("beat %d at %s: %v, want %v", i, b.at, got, b.want)
				}
			}
			if _, _, live := tw.Twin(); live != tc.live {
				t.Errorf("live = %v, want %v", live, tc.live)
			}
		})
	}
}

// TestTwinsOnOneKey runs two agents against a model of the heartbeat key
// (one value, writes with compare-and-set on the writer's previous
// revision, as bucket.WriteHeartbeat does) at random phases and with
// ticker jitter: both see the other within two beats and never lose it
// while both run, and the one left sees the end within TwinHold and two
// beats of the other's last write (its next beat finds that write; the
// end is seen at the first beat TwinHold after it).
func TestTwinsOnOneKey(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		type agent struct {
			w     HeartbeatWriter
			phase time.Duration
			after uint64 // revision of its last write
			tw    Twins
			seen  time.Duration // when it first saw the other, -1 never
			ended time.Duration
		}
		agents := []*agent{
			{w: HeartbeatWriter{Key: "K", Instance: "a"}, phase: time.Duration(r.Int64N(int64(HeartbeatEvery))), seen: -1, ended: -1},
			{w: HeartbeatWriter{Key: "K", Instance: "b"}, phase: time.Duration(r.Int64N(int64(HeartbeatEvery))), seen: -1, ended: -1},
		}
		var (
			rev    uint64
			holder HeartbeatWriter
		)
		const beats, stopAt = 20, 12 // b stops after its 12th beat
		type write struct {
			at time.Duration
			a  *agent
		}
		var writes []write
		for i, a := range agents {
			for n := range beats {
				if i == 1 && n >= stopAt {
					break
				}
				jitter := time.Duration(r.Int64N(int64(200 * time.Millisecond)))
				writes = append(writes, write{a.phase + time.Duration(n)*HeartbeatEvery + jitter, a})
			}
		}
		sort.Slice(writes, func(i, j int) bool { return writes[i].at < writes[j].at })
		start := max(agents[0].phase, agents[1].phase)
		stopped := agents[1].phase + (stopAt-1)*HeartbeatEvery + 200*time.Millisecond
		for _, w := range writes {
			a := w.a
			var other *HeartbeatWriter
			if a.after != 0 && rev != a.after {
				found := holder
				other = &found
			}
			rev++
			holder, a.after = a.w, rev
			switch a.tw.Beat(t0.Add(w.at), a.w, other) {
			case TwinStarted:
				if a.seen < 0 {
					a.seen = w.at
				}
			case TwinEnded:
				if w.at < stopped {
					t.Fatalf("seed %d: %s lost its twin at %s while both ran", seed, a.w.Instance, w.at)
				}
				a.ended = w.at
			}
		}
		for _, a := range agents {
			if a.seen < 0 || a.seen-start > 2*HeartbeatEvery+time.Second {
				t.Errorf("seed %d: %s saw its twin at %s, both running from %s", seed, a.w.Instance, a.seen, start)
			}
		}
		if a := agents[0]; a.ended < 0 || a.ended-stopped > TwinHold+2*HeartbeatEvery+time.Second {
			t.Errorf("seed %d: the agent left saw its twin's end at %s, it stopped at %s", seed, a.ended, stopped)
		}
	}
}
