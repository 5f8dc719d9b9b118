package hook

import (
	"fmt"
	"os"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/hook/hooktest"
)

// recorderPath is the recorder hook, built once for the whole run.
var recorderPath string

func TestMain(m *testing.M) {
	// A re-executed test binary standing in for a whole agent (see
	// TestHookDiesWithTheAgent).
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperAgent())
	}
	dir, err := os.MkdirTemp("", "ikto-hook-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	recorderPath, err = hooktest.BuildTo(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
