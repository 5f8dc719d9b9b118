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
