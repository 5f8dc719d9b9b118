package bench

import (
	"testing"
	"time"
)

func TestLogTimesTakesEachMessagesFirstLine(t *testing.T) {
	logs := `time=2026-12-07T12:26:13.095Z level=INFO msg=starting version=0.4.0 prefix=fd81::/48
not a log line
time=2026-12-07T12:26:13.108Z level=INFO msg="connected to NATS" server=nats://198.19.255.1:42115
time=2026-12-07T12:26:13.240Z level=INFO msg="peer added" peer=h03
time=2026-12-07T12:26:13.250Z level=INFO msg="peer added" peer=h02
`
	at, err := logTimes(logs)
	if err != nil {
		t.Fatal(err)
	}
	for msg, want := range map[string]string{
		"starting":          "2026-12-07T12:26:13.095Z",
		"connected to NATS": "2026-12-07T12:26:13.108Z",
		"peer added":        "2026-12-07T12:26:13.240Z",
	} {
		w, _ := time.Parse(time.RFC3339Nano, want)
		if got, ok := at[msg]; !ok || !got.Equal(w) {
			t.Errorf("%q at %v (found %v), want %v", msg, got, ok, w)
		}
	}
	if len(at) != 3 {
		t.Errorf("%d messages, want 3: %v", len(at), at)
	}
	if _, err := logTimes("time=yesterday level=INFO msg=starting\n"); err == nil {
		t.Error("a line with a bad time: no error")
	}
}
