package hook

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogSlog is go-plugin's logger for one hook: an hclog.Logger that writes
// into the agent's slog log. go-plugin logs two things through it: its own
// chatter about starting and stopping the process (the supervisor logs what
// matters itself, so that goes out at debug), and, through Named, every line
// the hook wrote to stderr (hclog JSON, decoded by go-plugin), which keeps
// the hook's level.
type hclogSlog struct {
	log     *slog.Logger
	name    string
	relay   bool // lines from the hook's stderr, not go-plugin's own
	implied []any
	level   *atomic.Int32 // an hclog.Level, shared by the Named copies
}

var _ hclog.Logger = (*hclogSlog)(nil)

func newHclogSlog(l *slog.Logger) *hclogSlog {
	h := &hclogSlog{log: l, level: new(atomic.Int32)}
	h.level.Store(int32(hclog.Trace))
	return h
}

func (h *hclogSlog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level < h.GetLevel() {
		return
	}
	sl := slogLevel(level)
	if !h.relay {
		sl = slog.LevelDebug
	}
	ctx := context.Background()
	if !h.log.Enabled(ctx, sl) {
		return
	}
	attrs := append(append([]any(nil), h.implied...), args...)
	if h.relay {
		attrs = tidyRelayed(attrs)
	}
	h.log.Log(ctx, sl, msg, attrs...)
}

func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// tidyRelayed drops go-plugin's copy of the hook's timestamp (slog stamps the
// line) and sorts the hook's pairs by key: go-plugin decodes them from a JSON
// object, in random order, and a log line should read the same every time.
func tidyRelayed(args []any) []any {
	type kv struct {
		k string
		v any
	}
	var pairs []kv
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok || k == "timestamp" {
			continue
		}
		pairs = append(pairs, kv{k, args[i+1]})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	out := make([]any, 0, 2*len(pairs))
	for _, p := range pairs {
		out = append(out, p.k, p.v)
	}
	return out
}

func (h *hclogSlog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogSlog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogSlog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogSlog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogSlog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogSlog) enabled(l hclog.Level) bool {
	return l >= h.GetLevel() && h.log.Enabled(context.Background(), slogLevel(l))
}

func (h *hclogSlog) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogSlog) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogSlog) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogSlog) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogSlog) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogSlog) ImpliedArgs() []any { return h.implied }

func (h *hclogSlog) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

func (h *hclogSlog) Name() string { return h.name }

// Named is how go-plugin derives the logger for the hook's stderr lines.
func (h *hclogSlog) Named(name string) hclog.Logger {
	c := *h
	c.relay = true
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (h *hclogSlog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.relay = true
	c.name = name
	return &c
}

func (h *hclogSlog) SetLevel(l hclog.Level) { h.level.Store(int32(l)) }
func (h *hclogSlog) GetLevel() hclog.Level  { return hclog.Level(h.level.Load()) }

func (h *hclogSlog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogSlog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &lineWriter{emit: func(line string) { h.Info(line) }}
}

// lineWriter calls emit once per complete line written to it. go-plugin hands
// the hook's stray stdout and os.Stderr writes over as arbitrary chunks.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(line string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimRight(w.buf[:i], "\r"); len(line) > 0 {
			w.emit(string(line))
		}
		w.buf = w.buf[i+1:]
	}
	// A hook that never ends its line must not grow the agent's memory.
	if len(w.buf) > 64<<10 {
		w.emit(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}
