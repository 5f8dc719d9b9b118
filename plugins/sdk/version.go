package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"

	"github.com/ikto-mesh/ikto/plugins/sdk/versionline"
)

// Version and Commit are a hook's build stamp. ikto's Makefile sets them for
// the shipped hooks with
//
//	-ldflags "-X github.com/ikto-mesh/ikto/plugins/sdk.Version=0.4.0 -X github.com/ikto-mesh/ikto/plugins/sdk.Commit=abc1234"
//
// A hook built without the stamp reports what the Go toolchain recorded
// instead: the main module's version (set by go install) and the VCS
// revision (set by go build in a checkout), else "dev" and "unknown".
var (
	Version = ""
	Commit  = ""
)

// VersionString is the hook's --version line, in the format every ikto
// binary shares (versionline.Format): "NAME VERSION (commit COMMIT, GOVERSION)".
func VersionString(name string) string {
	version, commit := stamp()
	return versionline.Format(name, version, commit)
}

// HandleVersion reports whether the hook was started with --version or -v,
// as every ikto binary is; if so it has printed the hook's version line on
// standard output, and main should return. The agent never passes arguments
// to a hook, so the flag can only come from a person. Serve calls it first,
// so every hook gets --version and -v; a
// hook that does work before Serve (opening a netlink socket, say) calls it
// at the top of main:
//
//	func main() {
//		if sdk.HandleVersion() {
//			return
//		}
//		...
//		sdk.Serve(h)
//	}
func HandleVersion() bool {
	if !slices.Contains(os.Args[1:], "--version") && !slices.Contains(os.Args[1:], "-v") {
		return false
	}
	fmt.Fprintln(os.Stdout, VersionString(filepath.Base(os.Args[0])))
	return true
}

// stamp is Version and Commit, or what the build info has for the ones
// the build did not set.
func stamp() (version, commit string) {
	version, commit = Version, Commit
	info, ok := debug.ReadBuildInfo()
	if version == "" && ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	if commit == "" && ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 7 {
				commit = s.Value[:7]
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}
