package sdktest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ConfigCase is one row of a hook's config table test: Raw is the "config"
// object as the agent's config file gives it, Want what the hook must make
// of it, or WantErr a substring of the error it must give instead.
type ConfigCase[C any] struct {
	Name    string // the subtest's name; Raw when empty
	Raw     string
	Want    C
	WantErr string
}

// CheckConfigs parses every case's Raw with parse, the hook's own config
// decoder, and compares the result with Want (cmp.Diff with opts) or the
// error with WantErr.
func CheckConfigs[C any](t *testing.T, parse func(json.RawMessage) (C, error), cases []ConfigCase[C], opts ...cmp.Option) {
	t.Helper()
	for _, tt := range cases {
		name := tt.Name
		if name == "" {
			name = tt.Raw
		}
		t.Run(name, func(t *testing.T) {
			got, err := parse(json.RawMessage(tt.Raw))
			if !errorContains(err, tt.WantErr) {
				t.Fatalf("parse(%s) error = %v, want %q (\"\" for none)", tt.Raw, err, tt.WantErr)
			}
			if diff := cmp.Diff(tt.Want, got, opts...); err == nil && diff != "" {
				t.Errorf("parse(%s) (-want +got):\n%s", tt.Raw, diff)
			}
		})
	}
}

// errorContains reports whether err is nil when want is "", or an error
// whose text contains want.
func errorContains(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}
