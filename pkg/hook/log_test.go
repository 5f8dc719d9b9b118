package hook

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
)

// go-plugin's own messages are debug chatter; the hook's relayed lines keep
// their level and fields, in a stable order, without go-plugin's timestamp.
func TestHclogSlog(t *testing.T) {
	tests := []struct {
		name  string
		relay bool
		level hclog.Level
		args  []any
		want  string
	}{
		{"go-plugin error is debug", false, hclog.Error, []any{"pid", 7}, `level=DEBUG msg=m hook=x pid=7`},
		{"relayed info", true, hclog.Info, []any{"z", 1, "timestamp", "t", "a", 2}, `level=INFO msg=m hook=x a=2 z=1`},
		{"relayed warn", true, hclog.Warn, nil, `level=WARN msg=m hook=x`},
		{"relayed error", true, hclog.Error, nil, `level=ERROR msg=m hook=x`},
		{"relayed trace is debug", true, hclog.Trace, nil, `level=DEBUG msg=m hook=x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf logbuf.Buffer
			base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
				Level:       slog.LevelDebug,
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return dropTime(a) },
			})).With("hook", "x")
			var l hclog.Logger = newHclogSlog(base)
			if tt.relay {
				l = l.Named("ikto-hook-x")
			}
			l.Log(tt.level, "m", tt.args...)
			if got := strings.TrimSpace(buf.String()); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func dropTime(a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func TestLineWriter(t *testing.T) {
	var lines []string
	w := &lineWriter{emit: func(l string) { lines = append(lines, l) }}
	for _, chunk := range []string{"one\ntw", "o\r\n", "\n", "three"} {
		w.Write([]byte(chunk))
	}
	if diff := cmp.Diff([]string{"one", "two"}, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	w.Write([]byte(strings.Repeat("x", 70<<10)))
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "threexxx") {
		t.Errorf("an endless line was not flushed at 64KiB: %d lines", len(lines))
	}
}
