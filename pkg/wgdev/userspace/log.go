package userspace

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// The lines wireguard-go logs, with the sender's endpoint, for a handshake
// message it refuses: an initiation (above all one from a peer it does not
// have), and an answer to an initiation it no longer waits for (the two
// ends' initiations crossed). Its log is the only place that says so;
// the tests of refused_test.go hold these to the wireguard-go in use.
const (
	refusedInitiation = "Received invalid initiation message from %s"
	refusedAnswer     = "Received invalid response message from %s"
)

// newLogger routes wireguard-go's printf logging to slog at debug level. Its
// "errors" are mostly about unreachable peers (failed handshakes, send
// errors), which the agent already reports through handshake times, so they
// stay at debug too. Formatting is skipped when debug is off because some of
// these lines are per handshake. A refused initiation or answer goes to
// refused (when not nil), whatever the level, without waiting.
func newLogger(log *slog.Logger, name string, refused chan<- wgdev.Refusal) *device.Logger {
	logf := func(kind string) func(string, ...any) {
		return func(format string, args ...any) {
			if !log.Enabled(context.Background(), slog.LevelDebug) {
				return
			}
			log.Debug(fmt.Sprintf(format, args...), "device", name, "source", "wireguard-go", "kind", kind)
		}
	}
	verbose := logf("verbose")
	return &device.Logger{Verbosef: func(format string, args ...any) {
		if (format == refusedInitiation || format == refusedAnswer) && refused != nil && len(args) == 1 {
			if from, err := netip.ParseAddrPort(fmt.Sprint(args[0])); err == nil {
				r := wgdev.Refusal{From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), At: time.Now(), Answer: format == refusedAnswer}
				select {
				case refused <- r:
				default:
				}
			}
		}
		verbose(format, args...)
	}, Errorf: logf("error")}
}
