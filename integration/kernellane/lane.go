package kernellane

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// Scenarios are the integration tests the lane runs on the kernel backend.
var Scenarios = []string{
	"TestThreeHostsFormAMesh",
	"TestFourthHostJoins",
	"TestDeletedRecordEvictsHost",
	"TestPrefixHeldByAnotherKey",
	"TestSIGTERMKeepsTheClaim",
	"TestDriftIsRepaired",
	"TestHooksRouteFirewallExec",
	"TestRestartWhileNATSIsDown",
	"TestRestartLosesNoPacket",
	"TestExternalDeviceAdoptedAndMeshed",
	"TestNonWireGuardLinkRefused",
}

// wgdevSuites are pkg/wgdev's privileged tests, which meet a real kernel
// WireGuard link only here.
var wgdevSuites = []struct {
	pkg   string
	tests []string
}{
	{"./wgdev/kernel", []string{"TestOpenReal"}},
	{"./wgdev/backend", []string{"TestCheckAndOpenReal", "TestCheckAndOpenKernelLink"}},
	{"./wgdev/external", []string{"TestAdoptRealWireguardGo"}},
}

// Options configure Run. Zero values take the defaults in brackets.
type Options struct {
	Kernel  string // kernel image [the newest in BootDir that can serve]
	BootDir string // where the kernel images are [/boot]
	// ModulesRoot holds the kernels' module trees [/lib/modules]. Another
	// (a copy with its modules compressed, say) changes only what the
	// initramfs carries: the guest's modprobe reads the host's /lib/modules.
	ModulesRoot string
	BinDir      string        // built ikto binaries [IKTO_BIN_DIR, else REPO/bin]
	Busybox     string        // a static busybox [/bin/busybox]
	Accel       string        // auto, kvm or tcg [auto: kvm when it boots the guest, else tcg]
	MemoryMiB   int           // [3072]
	CPUs        int           // [2]
	Timeout     time.Duration // boot to power-off [14m]
	Run         string        // regexp: only the scenarios it matches [all]
	Keep        bool          // keep the work directory
	Verbose     bool          // echo the whole guest console
	Out         io.Writer     // the report [os.Stdout]
}

func (o *Options) defaults() error {
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	if o.Accel == "" {
		o.Accel = "auto"
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 3072
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Timeout == 0 {
		o.Timeout = 14 * time.Minute
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("IKTO_BIN_DIR")
	}
	if o.BinDir == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return err
		}
		o.BinDir = filepath.Join(root, "bin")
	}
	switch o.Accel {
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("accel %q: want auto, kvm or tcg", o.Accel)
	}
	return nil
}

// CheckPrerequisites reports the first thing missing for the lane, wrapping
// ErrMissing: qemu, a kernel that can serve, a static busybox. It returns
// the kernel to boot and the newer ones it passed over.
func CheckPrerequisites(o Options) (Kernel, []Unfit, error) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return Kernel{}, nil, fmt.Errorf("%w: qemu-system-x86_64 not in PATH (apt-get install qemu-system-x86)", ErrMissing)
	}
	k, passed, err := hostKernels(o.BootDir, o.ModulesRoot).chooseKernel(o.Kernel)
	if err != nil {
		return Kernel{}, nil, err
	}
	if err := checkStatic(o.Busybox); err != nil {
		return Kernel{}, nil, fmt.Errorf("%w: %w (apt-get install busybox-static)", ErrMissing, err)
	}
	return k, passed, nil
}

// checkStatic makes sure path is a statically linked ELF binary: the
// initramfs has no libraries for a dynamic one.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is dynamically linked", path)
		}
	}
	return nil
}

// Run boots the lane and reports every scenario to o.Out. It returns
// whether all of them passed; an error means the lane itself could not run
// (it wraps ErrMissing for a missing prerequisite).
func Run(ctx context.Context, o Options) (bool, error) {
	if err := o.defaults(); err != nil {
		return false, err
	}
	k, passed, err := CheckPrerequisites(o)
	if err != nil {
		return false, err
	}
	for _, u := range passed {
		fmt.Fprintf(o.Out, "ikto-lane: passed over %s\n", u)
	}
	work, err := os.MkdirTemp("", "ikto-kernel-lane-")
	if err != nil {
		return false, err
	}
	if o.Keep {
		fmt.Fprintf(o.Out, "ikto-lane: work directory %s (kept)\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	start := time.Now()
	plan, expected, err := prepareWork(ctx, o, k, work)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(o.Out, "ikto-lane: prepared in %s; booting %s under qemu (%d CPUs, %d MiB)%s\n",
		time.Since(start).Round(time.Second), k.Image, o.CPUs, o.MemoryMiB, k.modulesNote())

	console, err := os.Create(filepath.Join(work, "console.log"))
	if err != nil {
		return false, err
	}
	defer console.Close()
	m := Machine{Kernel: k, Initramfs: filepath.Join(work, "initramfs.gz"), WorkDir: work,
		MemoryMiB: o.MemoryMiB, CPUs: o.CPUs, Console: console, Echo: echo(o)}
	bootCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	booted := time.Now()
	accel, err := boot(bootCtx, o, m)
	if err != nil {
		tail, _ := os.ReadFile(console.Name())
		return false, fmt.Errorf("%w\nlast console lines:\n%s", err, lastLines(string(tail), 30))
	}
	return report(o, work, plan, expected, accel, time.Since(booted))
}

// boot tries KVM first when asked to and when it works, else TCG.
func boot(ctx context.Context, o Options, m Machine) (string, error) {
	accels := []string{"tcg"}
	switch {
	case o.Accel == "kvm":
		accels = []string{"kvm"}
	case o.Accel == "auto" && KVMUsable():
		accels = []string{"kvm", "tcg"}
	}
	var err error
	for _, a := range accels {
		if err = m.Boot(ctx, a); err == nil {
			return a, nil
		}
		if !errors.Is(err, ErrNoBoot) || ctx.Err() != nil {
			return a, err
		}
		fmt.Fprintf(o.Out, "ikto-lane: %v\n", err)
	}
	return "", err
}

// echo shows the guest's own lines (progress, fatal errors) and kernel
// panics; with Verbose, everything.
func echo(o Options) func(string) {
	return func(line string) {
		if o.Verbose || strings.HasPrefix(line, "ikto-lane:") || strings.Contains(line, "Kernel panic") {
			fmt.Fprintf(o.Out, "%s\n", line)
		}
	}
}

// selected is the scenarios the Run pattern matches.
func selected(pattern string, names []string) ([]string, error) {
	if pattern == "" {
		return names, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	var out []string
	for _, n := range names {
		if re.MatchString(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
