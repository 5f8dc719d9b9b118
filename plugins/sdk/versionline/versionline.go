// Package versionline formats the one --version line that every ikto
// binary prints, the agent, ikto-init, ikto-admin and the hooks alike. It
// is its own package, without dependencies, so that binaries which are not
// hooks can share it without linking the plugin machinery.
package versionline

import (
	"fmt"
	"runtime"
)

// Format is the --version line:
//
//	NAME VERSION (commit COMMIT, GOVERSION)
//
// e.g. "ikto-agent 0.4.0 (commit 3f2a9c1, go1.26.0)", where VERSION is
// mk/version.sh's. Scripts may rely on
// its first two words.
func Format(name, version, commit string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", name, version, commit, runtime.Version())
}
