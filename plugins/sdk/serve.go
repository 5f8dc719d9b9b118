package sdk

import (
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// LogLevelEnv is the environment variable through which the agent tells a
// hook how much to log (trace, debug, info, warn, error; default info).
const LogLevelEnv = "IKTO_HOOK_LOG_LEVEL"

// stderr is the process's real standard error, captured before plugin.Serve
// replaces os.Stderr with a pipe: the agent reads hclog's JSON lines from the
// real one and relays them into its own log.
var stderr = os.Stderr

var logger = sync.OnceValue(func() hclog.Logger {
	level := hclog.LevelFromString(os.Getenv(LogLevelEnv))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Output:     stderr,
		JSONFormat: true,
		Level:      level,
	})
})

// Logger is the hook's logger: JSON lines on standard error, which the agent
// relays into its log tagged with the hook's name. Hooks log only through it
// (or to stderr) and never write to stdout.
func Logger() hclog.Logger { return logger() }

// Serve serves h to the agent over gRPC and returns when the agent closes the
// connection. It is the whole of a hook's main:
//
//	func main() { sdk.Serve(&myHook{}) }
//
// Run by hand (not by the agent), it prints that the binary is a plugin and
// exits with status 1; run with --version, it prints the version line
// (HandleVersion) and returns.
func Serve(h Hook) {
	if HandleVersion() {
		return
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         PluginSet(h),
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          Logger(),
	})
}
