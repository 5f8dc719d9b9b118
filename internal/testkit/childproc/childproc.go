// Package childproc starts the processes a test run spawns (agents,
// wireguard-go) so that they die with the test binary, even when the
// goroutine that started them switched network namespaces.
package childproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Start starts cmd, whose SysProcAttr is expected to set Pdeathsig, and
// calls exited with cmd.Wait's result once it has exited. Start returns
// when cmd has started (cmd.Process is set) or has failed to.
//
// The kernel sends Pdeathsig when the *thread* that forked the child exits,
// not the process, and Go retires threads whose goroutine ends locked (code
// that switches network namespaces does that). So the child is forked from
// a thread held locked, and so alive, until the child has exited.
func Start(cmd *exec.Cmd, exited func(error)) error {
	return StartIn("", cmd, exited)
}

// StartIn is Start with the child in the network namespace netns (a path
// such as /run/netns/NAME; "" for this thread's): the forking thread enters
// it, forks, and goes back at once; the child stays in it. Unlike `ip netns
// exec` this costs no extra process and no mount namespace, so a launch
// measures the program.
//
// The thread must go back: Go retires a thread whose goroutine ends locked,
// and the kernel then sends Pdeathsig to every child forked from that
// thread, whoever forked it (a nats-server started earlier on it). Only if
// going back fails is the thread left to be retired.
func StartIn(netns string, cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		leave := func() error { return nil }
		if netns != "" {
			var err error
			if leave, err = enter(netns); err != nil {
				runtime.UnlockOSThread() // still in its own namespace
				started <- err
				return
			}
		}
		err := cmd.Start()
		if lerr := leave(); lerr != nil {
			if err == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			started <- errors.Join(err, lerr)
			return // locked: the thread goes with this goroutine
		}
		defer runtime.UnlockOSThread()
		if err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}

// enter switches the calling thread into the network namespace at path and
// returns how to switch it back.
func enter(path string) (leave func() error, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("this thread's network namespace: %w", err)
	}
	target, err := os.Open(path)
	if err != nil {
		orig.Close()
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		orig.Close()
		return nil, fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return func() error {
		defer orig.Close()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("leave network namespace %s: %w", path, err)
		}
		return nil
	}, nil
}
