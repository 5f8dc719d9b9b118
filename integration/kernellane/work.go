package kernellane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/internal/testkit"
)

// buildTimeout bounds compiling one test binary (a cold build of the
// integration tests takes about a minute on two cores).
const buildTimeout = 8 * time.Minute

// bootMargin is the part of the lane's timeout kept for booting and for
// reading results, so a stuck test binary times out (and says where) before
// the machine is killed.
const bootMargin = 90 * time.Second

// prepareWork fills the work directory the guest sees at laneDir: the
// lane's own binary (the guest's init), the ikto binaries, the compiled test
// binaries, the initramfs and the plan. It returns the plan and, per suite,
// the tests expected to pass.
func prepareWork(ctx context.Context, o Options, k Kernel, work string) (Plan, map[string][]string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return Plan{}, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return Plan{}, nil, err
	}
	if err := linkOrCopy(self, filepath.Join(work, filepath.Base(guestCmd))); err != nil {
		return Plan{}, nil, err
	}
	binDir := filepath.Join(work, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		return Plan{}, nil, err
	}
	for _, name := range harness.AllBinaries {
		if err := linkOrCopy(filepath.Join(o.BinDir, name), filepath.Join(binDir, name)); err != nil {
			return Plan{}, nil, fmt.Errorf("%w (build them with make build, or point -bin-dir at them)", err)
		}
	}

	testTimeout := o.Timeout - bootMargin
	if o.Timeout < 2*bootMargin { // a short lane (debugging): keep a quarter
		testTimeout = o.Timeout * 3 / 4
	}
	plan := Plan{Env: []string{
		"IKTO_BIN_DIR=" + laneDir + "/bin",
		harness.BackendEnv + "=kernel",
		// Emulated CPUs, often shared with other work: every wait of the
		// harness gets three times its bound (a bound, not a pace: a
		// healthy scenario takes about as long as before).
		testkit.TimeScaleEnv + "=3",
		// Inside the lane nothing may be skipped: a skip would pass unseen.
		"IKTO_REQUIRE_INTEGRATION=1",
	}}
	expected := map[string][]string{}
	add := func(name, moduleDir, pkg string, tests []string, parallel int, env ...string) error {
		if len(tests) == 0 {
			return nil
		}
		out := filepath.Join(work, name+".test")
		if err := compileTests(ctx, filepath.Join(root, moduleDir), pkg, out, env); err != nil {
			return err
		}
		plan.Suites = append(plan.Suites, Suite{Name: name, Binary: laneDir + "/" + name + ".test",
			Tests: tests, Timeout: testTimeout, Parallel: parallel})
		expected[name] = tests
		return nil
	}
	for _, s := range wgdevSuites {
		tests, err := selected(o.Run, s.tests)
		if err != nil {
			return Plan{}, nil, err
		}
		if err := add("wgdev-"+filepath.Base(s.pkg), "pkg", s.pkg, tests, 0); err != nil {
			return Plan{}, nil, err
		}
	}
	scenarios, err := selected(o.Run, Scenarios)
	if err != nil {
		return Plan{}, nil, err
	}
	// Two emulated CPUs: the parallel scenarios run two at a time.
	if err := add("integration", "integration", ".", scenarios, 2); err != nil {
		return Plan{}, nil, err
	}
	// The bench's restart scenario, whose figures include the kernel's only
	// here; its module builds outside the workspace.
	benchTests, err := selected(o.Run, []string{"TestRestartScenario"})
	if err != nil {
		return Plan{}, nil, err
	}
	if err := add("bench", "integration/bench", ".", benchTests, 0, "GOWORK=off"); err != nil {
		return Plan{}, nil, err
	}
	if len(plan.Suites) == 0 {
		return Plan{}, nil, fmt.Errorf("-run %q matches no scenario", o.Run)
	}

	img, err := Initramfs(k, o.Busybox)
	if err != nil {
		return Plan{}, nil, err
	}
	if err := os.WriteFile(filepath.Join(work, "initramfs.gz"), img, 0o644); err != nil {
		return Plan{}, nil, err
	}
	if err := writeJSON(filepath.Join(work, filepath.Base(planFile)), plan); err != nil {
		return Plan{}, nil, err
	}
	return plan, expected, nil
}

// compileTests runs `go test -c` for pkg in the module at dir, with env
// added to the environment.
func compileTests(ctx context.Context, dir, pkg, out string, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-C", dir, "-c", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c %s in %s: %w\n%s", pkg, dir, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies it across filesystems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	if err := harness.CopyExecutable(src, dst); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}
