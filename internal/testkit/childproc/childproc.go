// Package childproc starts the processes a test run spawns (agents,
// wireguard-go) so that they die with the test binary, even when the
// goroutine that started them switched network namespaces. It depends on
// the standard library only.
package childproc

import (
	"os/exec"
	"runtime"
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
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
