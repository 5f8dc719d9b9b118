package backend

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHold: a device name held by one agent is refused to a second, which
// is told the first's pid, admin socket and config; released, it is free
// again. Abstract sockets need no privilege.
func TestHold(t *testing.T) {
	name := fmt.Sprintf("wgt%d", time.Now().UnixNano()%1e9)
	first := Holder{PID: 1, Socket: "/run/ikto/a.sock", Config: "/etc/ikto/a.json"}
	release, err := Hold(name, first)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Hold(name, Holder{Socket: "/run/ikto/b.sock"})
	if !errors.Is(err, ErrDeviceHeld) {
		t.Fatalf("second Hold = %v, want ErrDeviceHeld", err)
	}
	// The pid is the kernel's, not what the holder says (1).
	for _, w := range []string{name, fmt.Sprintf("pid %d", os.Getpid()), first.Socket, first.Config, "wg_dev_name"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if other, err := Hold(name+"x", Holder{}); err != nil {
		t.Errorf("another name: %v", err)
	} else {
		other()
	}
	release()
	again, err := Hold(name, Holder{})
	if err != nil {
		t.Fatalf("Hold after release: %v", err)
	}
	again()
}

// TakeOver: the holder passes its TUN (here a pipe: any descriptor) and
// stops; TakeOver returns once the name is free, with the descriptor, which
// is the holder's own (what is written to the pipe is read from it). A name
// nobody holds is nothing to take over; a holder that does not hand over
// says so, and keeps the name.
func TestTakeOver(t *testing.T) {
	name := fmt.Sprintf("iktotk%d", time.Now().UnixNano()%1e9)
	if tun, from, err := TakeOver(name, time.Second); tun != nil || from.PID != 0 || err != nil {
		t.Fatalf("TakeOver of a name nobody holds = %v, %+v, %v; want nothing", tun, from, err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stopped := make(chan struct{})
	var release func()
	release, err = Hold(name, Holder{Socket: "/run/ikto/a.sock", HandOver: &HandOver{
		TUN: func() (*os.File, error) { return r, nil },
		Stop: func() {
			close(stopped)
			go func() { time.Sleep(50 * time.Millisecond); release() }()
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tun, from, err := TakeOver(name, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	select {
	case <-stopped:
	default:
		t.Fatal("the holder was not stopped")
	}
	if from.PID != os.Getpid() || from.Socket != "/run/ikto/a.sock" {
		t.Errorf("taken over from %+v", from)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	r.Close() // the holder's copy goes; the passed one still reads the pipe
	b := make([]byte, 1)
	if _, err := tun.Read(b); err != nil || b[0] != 'x' {
		t.Errorf("read %q, %v from the passed descriptor; want the holder's pipe", b, err)
	}
	again, err := Hold(name, Holder{})
	if err != nil {
		t.Fatalf("Hold after the take-over: %v", err)
	}
	defer again()

	// A device that cannot be passed now: refused with the reason, and
	// the holder goes on holding it.
	busy := name + "b"
	keepBusy, err := Hold(busy, Holder{HandOver: &HandOver{
		TUN:  func() (*os.File, error) { return nil, errors.New("the device is not open yet") },
		Stop: func() { t.Error("a holder that refused stopped") },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer keepBusy()
	if tun, _, err := TakeOver(busy, time.Second); tun != nil || err == nil || !strings.Contains(err.Error(), "the device is not open yet") {
		t.Errorf("TakeOver from a holder that cannot pass its TUN = %v, %v; want its reason", tun, err)
	}

	other := name + "n"
	keep, err := Hold(other, Holder{})
	if err != nil {
		t.Fatal(err)
	}
	defer keep()
	if tun, _, err := TakeOver(other, time.Second); tun != nil || err == nil || !strings.Contains(err.Error(), "does not hand its device over") {
		t.Errorf("TakeOver from a holder without HandOver = %v, %v; want its refusal", tun, err)
	}
	if _, err := Hold(other, Holder{}); !errors.Is(err, ErrDeviceHeld) {
		t.Errorf("after a refused take-over, Hold = %v; want the name still held", err)
	}
}
