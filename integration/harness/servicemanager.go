package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ServiceManager plays systemd's side of an agent's notification socket
// for agents started with Host.StartAgentUnder, as the shipped unit has it
// (Type=notify, FileDescriptorStoreMax=1): it keeps the descriptors an agent
// stores (FDSTORE=1, FDNAME, FDSTOREREMOVE=1) and passes them to the next
// agent it starts ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID), as systemd
// does across a restart. systemd itself is not PID 1 on the test machines.
type ServiceManager struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu     sync.Mutex
	stored map[string]*os.File
	ready  int // READY=1 messages
}

// NewServiceManager listens on a notification socket in h's directory; it
// stops, closing what it holds, when the network closes.
func (h *Host) NewServiceManager() (*ServiceManager, error) {
	path := filepath.Join(h.Dir, "notify.sock")
	_ = os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket on %s: %w", h.Name, err)
	}
	sm := &ServiceManager{path: path, conn: c, done: make(chan struct{}), stored: map[string]*os.File{}}
	go sm.serve()
	h.net.mu.Lock()
	h.net.closers = append(h.net.closers, sm.Close)
	h.net.mu.Unlock()
	return sm, nil
}

// Stored is the names of the descriptors held, sorted.
func (sm *ServiceManager) Stored() []string {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	names := make([]string, 0, len(sm.stored))
	for n := range sm.stored {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Release closes what is held, as `systemctl stop` does.
func (sm *ServiceManager) Release() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	for n, f := range sm.stored {
		f.Close()
		delete(sm.stored, n)
	}
}

// Close stops listening and releases what is held.
func (sm *ServiceManager) Close() error {
	err := sm.conn.Close()
	<-sm.done
	sm.Release()
	return err
}

func (sm *ServiceManager) serve() {
	defer close(sm.done)
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*16))
	for {
		n, oobn, _, _, err := sm.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		fds, _ := parseRights(oob[:oobn])
		sm.handle(string(buf[:n]), fds)
	}
}

// handle applies one notification, as systemd reads it.
func (sm *ServiceManager) handle(msg string, fds []int) {
	fields := map[string]string{}
	for line := range strings.Lines(msg) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		fields[k] = v
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if fields["READY"] == "1" {
		sm.ready++
	}
	name := fields["FDNAME"]
	if name == "" {
		name = "stored"
	}
	if fields["FDSTOREREMOVE"] == "1" {
		if f, ok := sm.stored[name]; ok {
			f.Close()
			delete(sm.stored, name)
		}
	}
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), name)
		if fields["FDSTORE"] != "1" {
			f.Close() // systemd closes descriptors sent without FDSTORE=1
			continue
		}
		if _, ok := sm.stored[name]; ok {
			// FileDescriptorStoreMax=1: systemd refuses what does not fit.
			f.Close()
			continue
		}
		sm.stored[name] = f
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return nil, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// prepare gives cmd the notification socket and what is stored, as systemd
// gives a service's process: descriptors from 3 on, named in
// $LISTEN_FDNAMES. $LISTEN_PID must be the process's own PID, known only
// once it runs: a shell sets it and execs the program in its place.
func (sm *ServiceManager) prepare(cmd *exec.Cmd) {
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sm.path)
	names := sm.Stored()
	if len(names) == 0 {
		return
	}
	sm.mu.Lock()
	for _, n := range names {
		cmd.ExtraFiles = append(cmd.ExtraFiles, sm.stored[n])
	}
	sm.mu.Unlock()
	cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.Args = append([]string{"sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}, cmd.Args...)
	cmd.Path = "/bin/sh"
	cmd.Err = nil
}
