// Package childproc starts the processes a test run spawns (agents,
// wireguard-go) so that they die with the test binary, even when the
// goroutine that started them switched network namespaces.
package childproc

import (
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
// it first, and the child inherits it. Unlike `ip netns exec` this costs no
// extra process and no mount namespace, so a launch measures the program.
// The thread never leaves the namespace: its goroutine ends locked, and Go
// retires it once the child has exited.
func StartIn(netns string, cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if netns == "" {
			defer runtime.UnlockOSThread()
		} else if err := enter(netns); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}

// enter switches the calling thread into the network namespace at path.
func enter(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return nil
}
