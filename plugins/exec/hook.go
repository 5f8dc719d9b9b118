package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// execHook runs the configured command after each change, with the node
// and the change as JSON on its standard input. The command's exit status
// is the hook's answer: non-zero, a timeout or a failure to start makes
// Apply fail, and the agent then restarts the hook and hands it the full
// state again, which is the retry. So the command must be idempotent, and
// should read "peers" (the whole set) where it can rather than trust
// "added"/"removed" alone.
//
// Stop runs nothing: the command hears about changes of the mesh, not about
// the agent's lifetime.
type execHook struct {
	log hclog.Logger

	mu   sync.Mutex
	cfg  config
	node sdk.Node
	// ran is set once the command succeeded in this process: from then on
	// an Apply that changes nothing does not run it again.
	ran bool
}

var _ sdk.Hook = (*execHook)(nil)

func newExecHook(log hclog.Logger) *execHook { return &execHook{log: log} }

// Configure reads the hook's config (command, timeout) and checks that the
// program exists, so a typo shows at start-up rather than at the first
// change.
func (h *execHook) Configure(_ context.Context, node sdk.Node) error {
	cfg, err := parseConfig(node.Config)
	if err != nil {
		return err
	}
	if _, err := lookPath(cfg.Argv[0], envValue(commandEnv(), "PATH")); err != nil {
		return fmt.Errorf("configure exec hook: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cfg, h.node, h.ran = cfg, node, false
	h.log.Info("configured", "command", quoteArgv(cfg.Argv), "timeout", cfg.Timeout.String())
	return nil
}

// Apply runs the command once with the change on its standard input and
// logs how it ended, with the end of its output.
func (h *execHook) Apply(ctx context.Context, change sdk.Change) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.cfg.Argv) == 0 {
		return errors.New("run command: Apply before Configure")
	}
	if h.ran && change.Empty() {
		h.log.Debug("nothing changed; command not run", "peers", len(change.Peers))
		return nil
	}
	in, err := encodePayload(h.node, change)
	if err != nil {
		return fmt.Errorf("run command: %w", err)
	}
	res, err := runCommand(ctx, h.cfg.Argv, in, h.cfg.Timeout)
	fields := []any{"command", quoteArgv(h.cfg.Argv), "status", res.status,
		"duration", res.duration.String(), "peers", len(change.Peers),
		"added", len(change.Added), "updated", len(change.Updated), "removed", len(change.Removed)}
	if res.stdout != "" {
		fields = append(fields, "stdout", res.stdout)
	}
	if res.stderr != "" {
		fields = append(fields, "stderr", res.stderr)
	}
	if err != nil {
		h.log.Warn("command failed", append(fields, "err", err.Error())...)
		return fmt.Errorf("run %s: %w", quoteArgv(h.cfg.Argv), err)
	}
	h.ran = true
	h.log.Info("command finished", fields...)
	return nil
}

// Stop does nothing; see execHook.
func (h *execHook) Stop(context.Context) error { return nil }

// quoteArgv shows argv as one line for logs and errors.
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`") {
			a = fmt.Sprintf("%q", a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
