package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ikto-mesh/ikto/internal/testkit"
)

// externalStartTimeout bounds the wait for wireguard-go's control socket.
const externalStartTimeout = 10 * time.Second

// StartExternalDevice runs `wireguard-go -f DEVNAME` in the host's namespace,
// as an ikto 0.3.0 host does beside its agent, and waits until its UAPI
// socket answers. An agent with wg_backend auto or userspace then adopts it.
// Network.Close kills it by PID.
func (h *Host) StartExternalDevice(ctx context.Context) (*Process, error) {
	p, err := h.Start("wireguard-go", "wireguard-go", "-f", h.DevName)
	if err != nil {
		return nil, err
	}
	sock := uapiSocket(h.DevName)
	err = testkit.Poll(ctx, externalStartTimeout, func(context.Context) error {
		if p.Exited() {
			return testkit.Permanent(fmt.Errorf("wireguard-go on %s exited:\n%s", h.Name, p.LogTail(10)))
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("external device %s on %s: %w", h.DevName, h.Name, err)
	}
	return p, nil
}

// CopyBinaries copies the named binaries of b into dir and returns them
// there: another file with the same code, as an upgrade's new binary is.
func CopyBinaries(b *Binaries, dir string, names ...string) (*Binaries, error) {
	for _, name := range names {
		src, err := b.Path(name)
		if err != nil {
			return nil, err
		}
		if err := CopyExecutable(src, filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("copy %s: %w", name, err)
		}
	}
	return &Binaries{Dir: dir, errors: map[string]error{}}, nil
}

// CopyExecutable copies the file at src to a new file dst that anyone may
// run (mode 0755 less the umask), replacing what was there.
func CopyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
