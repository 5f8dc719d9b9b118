package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ErrDeviceHeld is wrapped by Hold's error when another ikto-agent drives
// the device name in this network namespace.
var ErrDeviceHeld = errors.New("wireguard device driven by another ikto-agent")

// Holder is an agent as Hold tells a second one of it.
type Holder struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket,omitempty"` // its admin socket
	Config string `json:"config,omitempty"` // its configuration file
}

// holdAnswerTimeout bounds how long a second agent waits for the first to
// say who it is.
const holdAnswerTimeout = time.Second

// holdAddr is the abstract unix socket that marks name as driven by an
// agent. Abstract sockets belong to a network namespace, as device names
// do, and go with the process that bound them, however it ends: no file
// is left behind for a crashed agent.
func holdAddr(name string) string { return "@ikto/wireguard/" + name }

// Hold marks the device name as this agent's until release is called, in
// the calling process's network namespace. Adopting what is already there
// (Open) is right for a device an earlier run of the agent left, or an
// external wireguard-go; it is wrong for a device another running agent
// drives, since each would remove the peers the other adds. A second
// Hold of one name fails with ErrDeviceHeld, naming the first agent (its
// pid from the kernel, its admin socket and config as it tells them) and
// the fix.
func Hold(name string, me Holder) (release func(), err error) {
	addr := holdAddr(name)
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("unix", addr)
		if err == nil {
			go answerHolds(l, me)
			return func() { l.Close() }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("mark device %s as this agent's (abstract socket %s): %w", name, addr, err)
		}
		other, err := askHolder(addr)
		if err == nil {
			return nil, fmt.Errorf("%w: ikto-agent pid %d (admin socket %s, config %s) drives %s in this network namespace; two agents on one device remove each other's peers: stop that agent (ikto-admin status -s %s shows its mesh), or give this one its own wg_dev_name and wg_port",
				ErrDeviceHeld, other.PID, dash(other.Socket), dash(other.Config), name, dash(other.Socket))
		}
		if attempt == 2 {
			return nil, fmt.Errorf("%w: another process holds %s in this network namespace (abstract socket %s) and does not say who it is (%w); stop it, or choose another wg_dev_name",
				ErrDeviceHeld, name, addr, err)
		}
		time.Sleep(100 * time.Millisecond) // its agent is just ending
	}
}

// answerHolds tells each caller who holds the device, until l is closed.
func answerHolds(l net.Listener, me Holder) {
	msg, _ := json.Marshal(me)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(holdAnswerTimeout))
		_, _ = c.Write(append(msg, '\n'))
		c.Close()
	}
}

// askHolder reads who holds addr; the pid is the kernel's (SO_PEERCRED),
// not the holder's word.
func askHolder(addr string) (Holder, error) {
	c, err := net.DialTimeout("unix", addr, holdAnswerTimeout)
	if err != nil {
		return Holder{}, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(holdAnswerTimeout))
	var h Holder
	if err := json.NewDecoder(c).Decode(&h); err != nil {
		return Holder{}, fmt.Errorf("read its answer: %w", err)
	}
	if raw, err := c.(*net.UnixConn).SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				h.PID = int(cred.Pid)
			}
		})
	}
	return h, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
