package kernellane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Machine is how the guest is booted.
type Machine struct {
	Kernel    Kernel
	Initramfs string // path of the gzipped cpio
	WorkDir   string // shared read-write as laneTag
	MemoryMiB int
	CPUs      int
	// Console receives every line the guest prints; Echo the ones worth
	// showing as they come.
	Console io.Writer
	Echo    func(line string)
}

// kvmBootWait is how long a KVM guest may take to print UpMarker before the
// lane gives up on KVM (it boots in about a second when it works; here KVM
// has been seen to reject the guest's first instructions).
const kvmBootWait = 30 * time.Second

// KVMUsable reports whether /dev/kvm can be opened, the first condition for
// trying it.
func KVMUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func (m Machine) args(accel string) []string {
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	return []string{
		"-accel", accel, "-cpu", cpu,
		"-smp", strconv.Itoa(m.CPUs), "-m", strconv.Itoa(m.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", m.Kernel.Image, "-initrd", m.Initramfs,
		// panic=-1: a guest panic reboots, which -no-reboot turns into qemu
		// exiting instead of the host waiting for its deadline.
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4",
		"-virtfs", "local,path=/,mount_tag=" + rootTag + ",security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + m.WorkDir + ",mount_tag=" + laneTag + ",security_model=none,multidevs=remap",
	}
}

// ErrNoBoot is returned when the guest never printed UpMarker.
var ErrNoBoot = errors.New("the guest did not boot")

// Boot runs the machine with accel ("kvm" or "tcg") until it powers off,
// ctx ends (then qemu is killed by PID) or, with KVM, the guest does not
// come up within kvmBootWait. It returns nil when qemu exited on its own
// after the guest came up.
func (m Machine) Boot(ctx context.Context, accel string) error {
	cmd := exec.Command("qemu-system-x86_64", m.args(accel)...)
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// If the lane itself is killed, the kernel kills qemu.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	up := make(chan struct{})
	var upOnce sync.Once
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(m.Console, line)
			if strings.HasPrefix(line, UpMarker) {
				upOnce.Do(func() { close(up) })
			}
			if m.Echo != nil {
				m.Echo(line)
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-read // all output read before Wait closes the pipe
		exited <- cmd.Wait()
	}()
	kill := func() error {
		_ = cmd.Process.Kill() // by PID
		return <-exited
	}

	var bootTimer <-chan time.Time
	if accel == "kvm" {
		t := time.NewTimer(kvmBootWait)
		defer t.Stop()
		bootTimer = t.C
	}
	cameUp := false
	for {
		select {
		case <-up:
			cameUp, up, bootTimer = true, nil, nil
		case <-bootTimer:
			kill()
			return fmt.Errorf("%w with %s in %s", ErrNoBoot, accel, kvmBootWait)
		case <-ctx.Done():
			kill()
			return fmt.Errorf("qemu (%s) killed: %w", accel, ctx.Err())
		case err := <-exited:
			select {
			case <-up:
				cameUp = true
			default:
			}
			if !cameUp {
				return fmt.Errorf("%w with %s: qemu exited (%v): %s", ErrNoBoot, accel, err, strings.TrimSpace(stderr.String()))
			}
			if err != nil {
				return fmt.Errorf("qemu (%s): %w: %s", accel, err, strings.TrimSpace(stderr.String()))
			}
			return nil
		}
	}
}
