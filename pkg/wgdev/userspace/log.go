package userspace

import (
	"context"
	"fmt"
	"log/slog"

	"golang.zx2c4.com/wireguard/device"
)

// newLogger routes wireguard-go's printf logging to slog at debug level. Its
// "errors" are mostly about unreachable peers (failed handshakes, send
// errors), which the agent already reports through handshake times, so they
// stay at debug too. Formatting is skipped when debug is off because some of
// these lines are per handshake.
func newLogger(log *slog.Logger, name string) *device.Logger {
	logf := func(kind string) func(string, ...any) {
		return func(format string, args ...any) {
			if !log.Enabled(context.Background(), slog.LevelDebug) {
				return
			}
			log.Debug(fmt.Sprintf(format, args...), "device", name, "source", "wireguard-go", "kind", kind)
		}
	}
	return &device.Logger{Verbosef: logf("verbose"), Errorf: logf("error")}
}
