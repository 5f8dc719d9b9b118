package kernellane

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UpMarker is the first line the guest's init prints: the host knows the
// kernel booted and the lane's binary runs (and, with KVM, that the
// accelerator works).
const UpMarker = "ikto-lane: guest up"

// outDir is where the guest writes logs and result.json.
const outDir = laneDir + "/out"

// guestPath is the guest's PATH: the host's usual one.
const guestPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Guest is the lane's init inside the machine: it prepares the system, runs
// every suite of the plan, writes the results to the share and powers off.
// It never returns normally: init must not exit.
func Guest(planPath string) {
	fmt.Printf("%s, kernel %s\n", UpMarker, kernelRelease())
	err := runGuest(planPath)
	if err != nil {
		fmt.Printf("%s %v\n", FatalMarker, err)
	}
	unix.Sync()
	// Power off at once: qemu exits and the host reads the share.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Printf("%s power off: %v\n", FatalMarker, err)
	}
	select {}
}

func runGuest(planPath string) error {
	var plan Plan
	if err := readJSON(planPath, &plan); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	os.Setenv("PATH", guestPath)
	os.Setenv("HOME", "/root")
	os.Setenv("TMPDIR", "/tmp")
	_ = unix.Sethostname([]byte("ikto-lane"))
	prepareGuest()

	reaper := startReaper()
	res := GuestResult{Kernel: kernelRelease()}
	for _, s := range plan.Suites {
		res.Suites = append(res.Suites, runSuite(s, plan.Env, reaper))
	}
	return writeJSON(filepath.Join(outDir, "result.json"), res)
}

// prepareGuest does what a distribution's boot would: loopback up, and the
// modules the scenarios need loaded up front (the kernel would load them on
// demand through /sbin/modprobe from the host's /lib/modules too; tun has
// no such trigger for /dev/net/tun).
func prepareGuest() {
	for _, argv := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		append([]string{"modprobe", "-a"}, guestModules...),
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			fmt.Printf("ikto-lane: %s: %v: %s\n", strings.Join(argv, " "), err, out)
		}
	}
}

// runSuite runs one test binary, its output to out/NAME.log, and echoes the
// lines that tell progress (top-level results, panics) to the console.
func runSuite(s Suite, env []string, reaper *reaper) SuiteResult {
	r := SuiteResult{Name: s.Name}
	start := time.Now()
	defer func() { r.Duration = time.Since(start) }()
	log, err := os.Create(filepath.Join(outDir, s.Name+".log"))
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer log.Close()
	fmt.Printf("ikto-lane: suite %s: %s\n", s.Name, strings.Join(append([]string{s.Binary}, s.Args()...), " "))
	cmd := exec.Command(s.Binary, s.Args()...)
	cmd.Dir = "/tmp"
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		sc := bufio.NewScanner(io.TeeReader(pr, log))
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			if l := sc.Text(); isProgressLine(l) {
				fmt.Printf("ikto-lane: %s: %s\n", s.Name, l)
			}
		}
		io.Copy(io.Discard, pr) // an overlong line: keep the log whole
	}()
	code, err := reaper.run(cmd)
	pw.Close()
	<-echoed
	r.ExitCode = code
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// FigureMarker marks a measurement a test logs for the lane to show (the
// bench's restart figures).
const FigureMarker = "figure: "

// isProgressLine picks from `go test -v` output what is worth a console
// line: top-level results, figures and how the binary ended.
func isProgressLine(l string) bool {
	if strings.Contains(l, FigureMarker) {
		return true
	}
	for _, p := range []string{"--- PASS: ", "--- FAIL: ", "--- SKIP: ", "panic: ", "FAIL", "PASS", "ok "} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// reaper reaps the orphans init inherits (an agent's hooks when the agent is
// killed, say) so they do not linger as zombies that still answer kill -0,
// without stealing the exit status of the suite it is waiting for.
type reaper struct {
	mu    sync.Mutex
	child int // the suite's PID, reaped by run itself
	sigs  chan os.Signal
}

func startReaper() *reaper {
	r := &reaper{sigs: make(chan os.Signal, 16)}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go func() {
		for range r.sigs {
			r.reapOrphans()
		}
	}()
	return r
}

func (r *reaper) reapOrphans() {
	for {
		var info unix.Siginfo
		// WNOWAIT: look first, so the suite's own exit is left for run.
		if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return
		}
		pid := int(siginfoPID(&info))
		r.mu.Lock()
		mine := pid == r.child
		r.mu.Unlock()
		if pid == 0 || mine {
			return
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// run starts cmd and waits for it; its exit code, or -1 and the error when
// it could not run or was killed.
func (r *reaper) run(cmd *exec.Cmd) (int, error) {
	r.mu.Lock()
	err := cmd.Start()
	if err == nil {
		r.child = cmd.Process.Pid
	}
	r.mu.Unlock()
	if err != nil {
		return -1, err
	}
	err = cmd.Wait()
	r.mu.Lock()
	r.child = 0
	r.mu.Unlock()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return -1, err
	}
	return cmd.ProcessState.ExitCode(), nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// siginfoPID is si_pid of a SIGCHLD siginfo: the first field of the union
// that x/sys leaves opaque, right after signo, errno, code and padding (the
// same offset on every 64-bit Linux).
func siginfoPID(info *unix.Siginfo) int32 {
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), 16))
}
