package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The binaries BuildBinaries knows, by name.
const (
	AgentBinary = "ikto-agent"
	InitBinary  = "ikto-init"
	AdminBinary = "ikto-admin"

	RouteHookBinary    = "ikto-hook-route"
	FirewallHookBinary = "ikto-hook-firewall"
	ExecHookBinary     = "ikto-hook-exec"
)

// AllBinaries is every binary of the repository, in build order.
var AllBinaries = []string{AgentBinary, InitBinary, AdminBinary, RouteHookBinary, FirewallHookBinary, ExecHookBinary}

// sourceDir is where a binary's main package lives, relative to the
// repository root: cmd/NAME, or plugins/X for ikto-hook-X.
func sourceDir(name string) string {
	if hook, ok := strings.CutPrefix(name, "ikto-hook-"); ok {
		return filepath.Join("plugins", hook)
	}
	return filepath.Join("cmd", name)
}

// buildTimeout bounds one `go build`; a cold build of the agent on two cores
// takes about a minute.
const buildTimeout = 8 * time.Minute

// Binaries is a directory of built ikto binaries.
type Binaries struct {
	Dir    string
	errors map[string]error
}

// Path is the path of the binary name, or the reason it is not there.
func (b *Binaries) Path(name string) (string, error) {
	if err := b.errors[name]; err != nil {
		return "", err
	}
	p := filepath.Join(b.Dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("binary %s: %w", name, err)
	}
	return p, nil
}

// BuildBinaries builds names (all of AllBinaries when none are given) into
// dir, each from its own module: `go build -C <repo>/cmd/NAME -o dir/NAME .`
// (plugins/X for the hook ikto-hook-X).
// When IKTO_BIN_DIR is set it builds nothing and uses the binaries there.
// The error joins every binary that failed; the Binaries still serves the
// ones that built, so a test needing only the agent can go on.
func BuildBinaries(ctx context.Context, dir string, names ...string) (*Binaries, error) {
	if env := os.Getenv("IKTO_BIN_DIR"); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			return nil, fmt.Errorf("IKTO_BIN_DIR %s: %w", env, err)
		}
		return &Binaries{Dir: abs, errors: map[string]error{}}, nil
	}
	if len(names) == 0 {
		names = AllBinaries
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("binary dir %s: %w", dir, err)
	}
	b := &Binaries{Dir: abs, errors: map[string]error{}}
	var errs []error
	for _, name := range names {
		if err := buildOne(ctx, root, abs, name); err != nil {
			b.errors[name] = err
			errs = append(errs, err)
		}
	}
	return b, errors.Join(errs...)
}

func buildOne(ctx context.Context, root, dir, name string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	src := filepath.Join(root, sourceDir(name))
	cmd := exec.CommandContext(ctx, "go", "build", "-C", src, "-o", filepath.Join(dir, name), ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build %s: %w\n%s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RepoRoot is the ikto repository root: IKTO_REPO_ROOT if set, else found
// from this source file's location, else from `go env GOWORK`.
func RepoRoot() (string, error) {
	if env := os.Getenv("IKTO_REPO_ROOT"); env != "" {
		return env, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if isRepoRoot(root) {
			return root, nil
		}
	}
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err == nil {
		if gw := strings.TrimSpace(string(out)); gw != "" && gw != "off" && isRepoRoot(filepath.Dir(gw)) {
			return filepath.Dir(gw), nil
		}
	}
	return "", errors.New("cannot find the ikto repository root; run from inside it or set IKTO_REPO_ROOT")
}

func isRepoRoot(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cmd", AgentBinary, "go.mod"))
	return err == nil
}
