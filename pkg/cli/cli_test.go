package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestExecute(t *testing.T) {
	errGone := errors.New("gone")
	exit := func(err error) (int, string) {
		if errors.Is(err, errGone) {
			return ExitEvicted, "; start again"
		}
		return ExitError, ""
	}
	tests := []struct {
		args       []string
		exit       func(error) (int, string)
		wantCode   int
		wantStderr string
	}{
		{args: nil, wantCode: ExitOK},
		{args: []string{"--bogus"}, wantCode: ExitUsage, wantStderr: "tool: unknown flag: --bogus\nRun 'tool --help' for usage.\n"},
		{args: []string{"--fail", "usage"}, wantCode: ExitUsage, wantStderr: "tool: bad usage\nRun 'tool --help' for usage.\n"},
		{args: []string{"--fail", "plain"}, wantCode: ExitError, wantStderr: "tool: plain\n"},
		{args: []string{"--fail", "gone"}, wantCode: ExitError, wantStderr: "tool: gone\n"},
		{args: []string{"--fail", "gone"}, exit: exit, wantCode: ExitEvicted, wantStderr: "tool: gone; start again\n"},
		{args: []string{"--fail", "plain"}, exit: exit, wantCode: ExitError, wantStderr: "tool: plain\n"},
	}
	for _, tt := range tests {
		var fail string
		root := &cobra.Command{
			Use:           "tool [flags]",
			SilenceErrors: true,
			SilenceUsage:  true,
			RunE: func(*cobra.Command, []string) error {
				switch fail {
				case "usage":
					return Usagef("bad usage")
				case "gone":
					return errGone
				case "plain":
					return errors.New("plain")
				}
				return nil
			},
		}
		root.Flags().StringVar(&fail, "fail", "", "how to fail")
		var stdout, stderr strings.Builder
		code := Execute(root, tt.args, &stdout, &stderr, tt.exit)
		if code != tt.wantCode || stderr.String() != tt.wantStderr {
			t.Errorf("Execute(%q) = %d, stderr %q; want %d, %q", tt.args, code, stderr.String(), tt.wantCode, tt.wantStderr)
		}
	}
}
