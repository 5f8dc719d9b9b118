// Package fdstore keeps file descriptors in systemd's file descriptor store
// of the running service, so that the service's next process gets them back
// (sd_notify(3) FDSTORE=1, sd_listen_fds(3)): the embedded WireGuard
// device's TUN outlives an agent restart or upgrade that way. Outside a
// service (no $NOTIFY_SOCKET) a Store is nil and does nothing.
package fdstore

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Store is this service's file descriptor store. A nil *Store is valid: it
// holds nothing and stores nothing.
type Store struct {
	socket string // $NOTIFY_SOCKET

	mu        sync.Mutex
	inherited map[string]*os.File // passed by the service manager, not yet taken
}

// FromEnv is the store of the service this process runs as: the descriptors
// the service manager passed ($LISTEN_FDS, $LISTEN_FDNAMES, taken from the
// environment so that children do not see them) and its notification
// socket. nil outside a service.
func FromEnv() *Store {
	s := &Store{socket: os.Getenv("NOTIFY_SOCKET"), inherited: map[string]*os.File{}}
	for name, files := range activation.FilesWithNames() {
		s.inherited[name] = files[0]
		for _, extra := range files[1:] { // one per name is all we store
			extra.Close()
		}
	}
	if s.socket == "" && len(s.inherited) == 0 {
		return nil
	}
	return s
}

// Take returns the descriptor the previous process stored under name, once;
// nil when there is none.
func (s *Store) Take(name string) *os.File {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inherited[name]
	delete(s.inherited, name)
	return f
}

// TakeRest returns every descriptor passed and not taken, by name, once.
func (s *Store) TakeRest() map[string]*os.File {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := s.inherited
	s.inherited = map[string]*os.File{}
	return rest
}

// Put stores f under name, in place of what was stored under it: the
// service manager holds it (a copy) until Remove, or until the service
// stops without being restarted.
func (s *Store) Put(name string, f *os.File) error {
	if s == nil {
		return nil
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := s.notify("FDSTOREREMOVE=1\nFDNAME="+name, nil); err != nil {
		return err
	}
	// FDPOLL=0: systemd would drop a descriptor that signals POLLHUP.
	return s.notify("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, f)
}

// Remove drops what is stored under name.
func (s *Store) Remove(name string) error {
	if s == nil {
		return nil
	}
	if err := checkName(name); err != nil {
		return err
	}
	return s.notify("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

// checkName refuses what systemd refuses as an FDNAME.
func checkName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, ":\n") {
		return fmt.Errorf("fdstore: invalid name %q (1–255 characters, no colon or newline)", name)
	}
	return nil
}

// notify sends one notification, with f's descriptor when f is not nil.
func (s *Store) notify(msg string, f *os.File) error {
	if s.socket == "" {
		return nil // descriptors passed, but no store to give them back to
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fdstore: socket: %w", err)
	}
	defer unix.Close(sock)
	send := func(oob []byte) error {
		// A leading @ names an abstract socket; SockaddrUnix knows it.
		return unix.Sendmsg(sock, []byte(msg), oob, &unix.SockaddrUnix{Name: s.socket}, 0)
	}
	if f == nil {
		err = send(nil)
	} else {
		// Not f.Fd(): it would put the descriptor (and so its owner's,
		// a TUN wireguard-go reads) into blocking mode.
		var rc syscall.RawConn
		if rc, err = f.SyscallConn(); err == nil {
			cerr := rc.Control(func(fd uintptr) { err = send(unix.UnixRights(int(fd))) })
			err = errors.Join(err, cerr)
		}
	}
	if err != nil {
		return fmt.Errorf("fdstore: notify %s: %w", s.socket, err)
	}
	return nil
}
