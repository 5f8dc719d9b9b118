package bucket

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHeartbeatEncodeCapsUnreachable: a heartbeat carries at most
// MaxUnreachable keys, the first of the list, however many peers a host
// cannot hear; fewer are carried as they are.
func TestHeartbeatEncodeCapsUnreachable(t *testing.T) {
	keys := make([]string, 3*MaxUnreachable)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%04d", i)
	}
	for _, n := range []int{0, 1, MaxUnreachable, MaxUnreachable + 1, len(keys)} {
		hb := Heartbeat{PublicKey: "pk", Name: "host", At: time.Unix(1, 0).UTC(), Unreachable: keys[:n]}
		data, err := hb.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var got Heartbeat
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		want := keys[:min(n, MaxUnreachable)]
		if n == 0 {
			want = nil
		}
		if diff := cmp.Diff(want, got.Unreachable); diff != "" {
			t.Errorf("%d unreachable: carried (-want +got):\n%s", n, diff)
		}
		if len(hb.Unreachable) != n {
			t.Errorf("%d unreachable: Encode changed the caller's list to %d", n, len(hb.Unreachable))
		}
	}
}
