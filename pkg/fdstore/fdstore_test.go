package fdstore

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// manager is the service manager's end of $NOTIFY_SOCKET.
type manager struct {
	t    *testing.T
	conn *net.UnixConn
}

func newManager(t *testing.T) (*manager, string) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &manager{t: t, conn: c}, path
}

// next reads one notification and the descriptors it carried.
func (m *manager) next() (string, []int) {
	m.t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, 256)
	n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		m.t.Fatal(err)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		m.t.Fatal(err)
	}
	for _, cm := range msgs {
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			m.t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	return string(buf[:n]), fds
}

func TestPutReplacesWhatIsStoredUnderTheName(t *testing.T) {
	m, path := newManager(t)
	s := &Store{socket: path}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Put("tun-ik0", f); err != nil {
		t.Fatal(err)
	}
	msg, fds := m.next()
	if msg != "FDSTOREREMOVE=1\nFDNAME=tun-ik0" || len(fds) != 0 {
		t.Errorf("first notification %q with %d descriptors; want the old one removed, no descriptor", msg, len(fds))
	}
	msg, fds = m.next()
	if !strings.Contains(msg, "FDSTORE=1\n") || !strings.HasSuffix(msg, "\nFDNAME=tun-ik0") || len(fds) != 1 {
		t.Fatalf("second notification %q with %d descriptors; want FDSTORE=1 and the name, with one descriptor", msg, len(fds))
	}
	defer unix.Close(fds[0])
	var a, b unix.Stat_t
	if err := unix.Fstat(fds[0], &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(f.Fd()), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Error("the descriptor stored is not the file's")
	}
	if err := s.Remove("tun-ik0"); err != nil {
		t.Fatal(err)
	}
	if msg, _ := m.next(); msg != "FDSTOREREMOVE=1\nFDNAME=tun-ik0" {
		t.Errorf("Remove sent %q", msg)
	}
	if err := s.Put("tun:ik0", f); err == nil {
		t.Error("a name with a colon (the separator of $LISTEN_FDNAMES) was accepted")
	}
}

func TestNilStoreDoesNothing(t *testing.T) {
	var s *Store
	if s.Take("tun-ik0") != nil || s.TakeRest() != nil || s.Put("tun-ik0", os.Stdin) != nil || s.Remove("tun-ik0") != nil {
		t.Error("a nil store did something")
	}
}

// The descriptors the manager passes come back by name, each once. The
// manager's side runs here; the service's in a child of this test binary,
// which gets the descriptor as its 3 (this process's 3 is the runtime's).
func TestFromEnvTakesTheDescriptorsPassed(t *testing.T) {
	if os.Getenv("IKTO_FDSTORE_SERVICE") == "1" {
		serviceTakesItsDescriptor(t)
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := w.WriteString("ikto"); err != nil {
		t.Fatal(err)
	}
	// $LISTEN_PID is the service's own PID: a shell sets it and execs the
	// test binary in its place, as the harness's ServiceManager does.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "-test.run=^TestFromEnvTakesTheDescriptorsPassed$", "-test.v")
	cmd.Env = append(os.Environ(), "IKTO_FDSTORE_SERVICE=1", "NOTIFY_SOCKET=", "LISTEN_FDS=2", "LISTEN_FDNAMES=tun-ik0:tun-old")
	cmd.ExtraFiles = []*os.File{r, w}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the service's side failed: %v\n%s", err, out)
	}
}

func serviceTakesItsDescriptor(t *testing.T) {
	s := FromEnv()
	if s == nil {
		t.Fatal("FromEnv with a descriptor passed: nil store")
	}
	if os.Getenv("LISTEN_FDS") != "" {
		t.Error("LISTEN_FDS is left for children to see")
	}
	f := s.Take("tun-ik0")
	if f == nil {
		t.Fatal("Take found nothing under the name passed")
	}
	defer f.Close()
	buf := make([]byte, 4)
	if n, err := f.Read(buf); err != nil || string(buf[:n]) != "ikto" {
		t.Fatalf("the descriptor taken reads %q, %v; want what the manager's pipe holds", buf[:n], err)
	}
	if s.Take("tun-ik0") != nil {
		t.Error("a descriptor was taken twice")
	}
	rest := s.TakeRest()
	if len(rest) != 1 || rest["tun-old"] == nil {
		t.Errorf("TakeRest = %v; want the one not taken, tun-old", rest)
	}
	for _, f := range rest {
		f.Close()
	}
	if len(s.TakeRest()) != 0 {
		t.Error("TakeRest gave descriptors twice")
	}
	if err := s.Put("tun-ik0", f); err != nil {
		t.Errorf("Put without a notify socket: %v; want nothing done", err)
	}
}
