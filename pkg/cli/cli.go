// Package cli holds what the three ikto binaries share at their edge: exit
// codes, the version stamp, usage errors, and logger construction. Only the
// mains use it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/plugins/sdk/versionline"
)

// Exit codes shared by every ikto binary (docs/contract.md §2).
const (
	ExitOK      = 0
	ExitError   = 1
	ExitUsage   = 2
	ExitInUse   = 3 // ikto-agent: the prefix is held by another public key
	ExitEvicted = 4 // ikto-agent: this host was evicted or its key revoked
)

// Version and Commit are stamped at build time with
// -ldflags "-X github.com/ikto-mesh/ikto/pkg/cli.Version=… -X …Commit=…".
var (
	Version = "dev"
	Commit  = "unknown"
)

// VersionString is what --version prints: the line every ikto binary and
// hook shares, "NAME VERSION (commit COMMIT, GOVERSION)".
func VersionString(binary string) string {
	return versionline.Format(binary, Version, Commit)
}

// UsageError marks a bad command line (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is a usage error.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// Execute runs root, the whole command line of an ikto binary, with args and
// returns the exit code. A bad flag is a usage error. An error is printed to
// stderr once, as "NAME: error": a usage error adds a pointer to --help and
// exits ExitUsage; any other takes its code, and a hint appended to the line,
// from exit (nil: ExitError, no hint).
func Execute(root *cobra.Command, args []string, stdout, stderr io.Writer, exit func(error) (code int, hint string)) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	err := root.ExecuteContext(context.Background())
	name := root.Name()
	switch {
	case err == nil:
		return ExitOK
	case IsUsage(err):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return ExitUsage
	}
	code, hint := ExitError, ""
	if exit != nil {
		code, hint = exit(err)
	}
	fmt.Fprintf(stderr, "%s: %v%s\n", name, err, hint)
	return code
}

// NewLogger builds the slog logger for --log-format and --log-level.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	log, _, err := NewLeveledLogger(w, format, level)
	return log, err
}

// NewLeveledLogger is NewLogger with its level in a LevelVar the caller may
// change while the logger is in use (a reloaded config).
func NewLeveledLogger(w io.Writer, format, level string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	}
	return nil, nil, Usagef("--log-format %q: want text or json", format)
}

// NoArgs is a cobra Args check that reports extra arguments as a usage error.
func NoArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("unexpected argument %q", args[0])
	}
	return nil
}
