package harness

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParsePings(t *testing.T) {
	log := `PING fd10:1::1 (fd10:1::1) 56 data bytes
[1700000000.000100] 64 bytes from fd10:1::1: icmp_seq=1 ttl=64 time=0.100 ms
[1700000000.050100] 64 bytes from fd10:1::1: icmp_seq=2 ttl=64 time=0.100 ms
[1700000000.050200] 64 bytes from fd10:1::1: icmp_seq=2 ttl=64 time=0.100 ms (DUP!)
[1700000000.250100] 64 bytes from fd10:1::1: icmp_seq=6 ttl=64 time=0.100 ms

--- fd10:1::1 ping statistics ---
7 packets transmitted, 3 received, +1 duplicates, 57.1429% packet loss, time 300ms
`
	r := parsePings(log)
	if r.sent != 7 || len(r.replies) != 3 || len(r.times) != 3 {
		t.Fatalf("sent %d, replies %v, times %v", r.sent, r.replies, r.times)
	}
	if d := r.times[2].Sub(r.times[1]); d != 200*time.Millisecond {
		t.Errorf("gap = %s, want 200ms", d)
	}
	if diff := cmp.Diff(map[int]bool{1: true, 2: true, 6: true}, r.replies); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}
