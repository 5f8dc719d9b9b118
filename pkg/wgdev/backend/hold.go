package backend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
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
	// HandOver, when set, lets a new agent take the device over
	// (TakeOver); nil refuses.
	HandOver *HandOver `json:"-"`
}

// HandOver is what the holding agent does when a new one takes its device
// over (ikto-agent --replace): it passes its TUN, if its device has one,
// so that the link, its addresses and routes stay, and stops, leaving the
// device to the new agent.
type HandOver struct {
	// TUN is the running device's TUN: nil when the device has none
	// (kernel, external), an error when it cannot be passed now (the
	// device not open yet, or closing), which the new agent is told.
	TUN  func() (*os.File, error)
	Stop func() // called once the TUN is passed
}

// handOverRequest is what TakeOver sends after the holder's answer;
// handOverReply is the holder's reply, carrying the TUN's descriptor
// (SCM_RIGHTS) when TUN says so.
const handOverRequest = "hand-over\n"

type handOverReply struct {
	TUN   bool   `json:"tun,omitempty"`
	Error string `json:"error,omitempty"`
}

// handOverTimeout bounds the wait for the holder's reply to a hand-over;
// maxWaiting bounds the connections of this agent's user that the holder
// waits on for a request at once (others are answered and hung up on).
const (
	handOverTimeout = 5 * time.Second
	maxWaiting      = 4
)

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
			return nil, fmt.Errorf("%w: ikto-agent pid %d (admin socket %s, config %s) drives %s in this network namespace; two agents on one device remove each other's peers: stop that agent (ikto-admin status -s %s shows its mesh), start this one with --replace to take the device over from it (an upgrade), or give this one its own wg_dev_name and wg_port",
				ErrDeviceHeld, other.PID, dash(other.Socket), dash(other.Config), name, dash(other.Socket))
		}
		if attempt == 2 {
			return nil, fmt.Errorf("%w: another process holds %s in this network namespace (abstract socket %s) and does not say who it is (%w); stop it, or choose another wg_dev_name",
				ErrDeviceHeld, name, addr, err)
		}
		time.Sleep(100 * time.Millisecond) // its agent is just ending
	}
}

// answerHolds tells each caller who holds the device, and hands the device
// over to a caller that asks, until l is closed. Only a caller of this
// process's user is waited on for a request (an abstract socket is open to
// every user of the network namespace), and only a few at once: a flood of
// connections costs an answer each, never a descriptor held for long.
func answerHolds(l net.Listener, me Holder) {
	msg, _ := json.Marshal(me)
	msg = append(msg, '\n')
	waiting := make(chan struct{}, maxWaiting)
	var mu sync.Mutex // one hand-over at a time, and none after one: the agent stops
	handed := false
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(100 * time.Millisecond) // out of descriptors, say: answer the next
			continue
		}
		uc := c.(*net.UnixConn)
		_ = uc.SetDeadline(time.Now().Add(holdAnswerTimeout))
		if _, err := uc.Write(msg); err != nil {
			uc.Close()
			continue
		}
		if cred, err := peerCred(uc); err != nil || int(cred.Uid) != os.Geteuid() {
			uc.Close()
			continue
		}
		select {
		case waiting <- struct{}{}:
		default:
			uc.Close()
			continue
		}
		go func() {
			defer func() { uc.Close(); <-waiting }()
			// A second agent's Hold reads and hangs up; TakeOver asks.
			req := make([]byte, len(handOverRequest))
			if _, err := io.ReadFull(uc, req); err != nil || string(req) != handOverRequest {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if handed {
				_ = replyHandOver(uc, handOverReply{Error: "this agent is handing its device over already"}, nil)
				return
			}
			handed = handOver(uc, me.HandOver)
		}()
	}
}

// replyHandOver writes r, with rights (a descriptor) if any.
func replyHandOver(c *net.UnixConn, r handOverReply, rights []byte) error {
	b, _ := json.Marshal(r)
	_, _, err := c.WriteMsgUnix(append(b, '\n'), rights, nil)
	return err
}

// handOver passes the device to the agent on c (of this process's user,
// answerHolds checked) and stops this agent once the TUN is on its way. It
// reports whether it did; a hand-over it cannot make now is refused with
// the reason, and this agent goes on.
func handOver(c *net.UnixConn, h *HandOver) bool {
	if h == nil {
		_ = replyHandOver(c, handOverReply{Error: "this agent does not hand its device over"}, nil)
		return false
	}
	tun, err := h.TUN()
	switch {
	case err != nil:
		_ = replyHandOver(c, handOverReply{Error: err.Error()}, nil)
		return false
	case tun == nil:
		err = replyHandOver(c, handOverReply{}, nil)
	default:
		// Not tun.Fd(): it would put the descriptor wireguard-go reads
		// into blocking mode.
		var rc syscall.RawConn
		if rc, err = tun.SyscallConn(); err == nil {
			cerr := rc.Control(func(fd uintptr) { err = replyHandOver(c, handOverReply{TUN: true}, unix.UnixRights(int(fd))) })
			err = errors.Join(err, cerr)
		}
		if err != nil {
			_ = replyHandOver(c, handOverReply{Error: "pass the TUN: " + err.Error()}, nil)
		}
	}
	if err != nil {
		return false // this agent goes on
	}
	h.Stop()
	return true
}

// peerCred is the process at the other end of c, as the kernel tells it
// (SO_PEERCRED): its pid and user.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	if cerr := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); cerr != nil {
		return nil, cerr
	}
	return cred, err
}

// TakeOver takes the device name over from the agent that holds it in this
// network namespace (ikto-agent --replace, an upgrade without systemd's fd
// store): that agent passes its TUN, if its device has one, and stops.
// TakeOver returns once the agent before has let go of the name (its device
// closed, its port free), within wait, with the TUN for the new device to
// run on (nil when the device has none) and who held it. Nothing holding
// the name is no error: there is nothing to take over.
func TakeOver(name string, wait time.Duration) (tun *os.File, from Holder, err error) {
	addr := holdAddr(name)
	c, err := net.DialTimeout("unix", addr, holdAnswerTimeout)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return nil, Holder{}, nil
		}
		return nil, Holder{}, fmt.Errorf("take %s over: ask its holder (abstract socket %s): %w", name, addr, err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	_ = uc.SetDeadline(time.Now().Add(holdAnswerTimeout))
	line, err := readLine(uc)
	if err == nil {
		err = json.Unmarshal(line, &from)
	}
	if err != nil {
		return nil, Holder{}, fmt.Errorf("take %s over: read its holder's answer: %w", name, err)
	}
	// Abstract names are first come, first served: what answers must be
	// an agent of this user before it is asked for a descriptor to run
	// the device on.
	cred, err := peerCred(uc)
	if err != nil {
		return nil, from, fmt.Errorf("take %s over: cannot tell who holds it (abstract socket %s): %w", name, addr, err)
	}
	from.PID = int(cred.Pid)
	if int(cred.Uid) != os.Geteuid() {
		return nil, from, fmt.Errorf("take %s over: pid %d holds it (abstract socket %s) as uid %d, and this agent runs as uid %d: not an agent to take the device from; stop that process", name, from.PID, addr, cred.Uid, os.Geteuid())
	}
	if _, err := uc.Write([]byte(handOverRequest)); err != nil {
		return nil, from, fmt.Errorf("take %s over from ikto-agent pid %d: %w", name, from.PID, err)
	}
	_ = uc.SetDeadline(time.Now().Add(handOverTimeout))
	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, from, fmt.Errorf("take %s over from ikto-agent pid %d: no reply (%w); an agent older than --replace cannot hand over: stop it, then start this one", name, from.PID, err)
	}
	tun, err = passedFile(oob[:oobn], "tun-"+name)
	if err != nil {
		return nil, from, fmt.Errorf("take %s over from ikto-agent pid %d: %w", name, from.PID, err)
	}
	var r handOverReply
	if err := json.Unmarshal(bytes.TrimSpace(buf[:n]), &r); err != nil || r.Error != "" || r.TUN != (tun != nil) {
		if tun != nil {
			tun.Close()
		}
		if err == nil && r.Error != "" {
			err = errors.New(r.Error)
		}
		return nil, from, fmt.Errorf("take %s over from ikto-agent pid %d: refused: %v", name, from.PID, errOr(err, "its reply does not match what it passed"))
	}
	// The agent before stops now; its hold goes last, after its device.
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		d, err := net.Dial("unix", addr)
		if err != nil {
			return tun, from, nil
		}
		d.Close()
		if time.Now().After(deadline) {
			if tun != nil {
				tun.Close()
			}
			return nil, from, fmt.Errorf("take %s over: ikto-agent pid %d said it stops, and still holds the device after %s; see its log, stop it (kill %d), then start this one again", name, from.PID, wait, from.PID)
		}
	}
}

// readLine reads up to a newline, a byte at a time, so that nothing after
// it (the hand-over reply and its descriptor) is read with it.
func readLine(c *net.UnixConn) ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		if _, err := c.Read(b); err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		line = append(line, b[0])
	}
	return nil, errors.New("answer too long")
}

// passedFile is the one descriptor in a control message, or nil.
func passedFile(oob []byte, name string) (*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("read the passed descriptor: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return nil, fmt.Errorf("read the passed descriptor: %w", err)
		}
		fds = append(fds, got...)
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("%d descriptors passed, want one", len(fds))
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), name), nil
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
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
	if cred, err := peerCred(c.(*net.UnixConn)); err == nil {
		h.PID = int(cred.Pid) // the kernel's word over the holder's
	}
	return h, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
