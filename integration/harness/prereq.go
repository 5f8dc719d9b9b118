package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// ErrMissingPrerequisite is wrapped by CheckPrerequisites' errors.
var ErrMissingPrerequisite = errors.New("integration prerequisite missing")

// CheckPrerequisites reports the first thing this machine lacks for the
// harness: root, ip(8), ping, bash, /dev/net/tun, and the wireguard module
// when IKTO_TEST_WG_BACKEND=kernel. The error wraps
// ErrMissingPrerequisite and says how to get it.
func CheckPrerequisites() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root (namespaces, bridges and TUN devices need root; run with sudo)", ErrMissingPrerequisite)
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"ip", "iproute2"}, {"ping", "iputils-ping"}, {"bash", "bash"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return fmt.Errorf("%w: %s not in PATH (apt-get install %s)", ErrMissingPrerequisite, tool.bin, tool.pkg)
		}
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: cannot open /dev/net/tun: %w", ErrMissingPrerequisite, err)
	}
	f.Close()
	return checkBackend()
}
