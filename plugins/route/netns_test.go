package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/ikto-mesh/ikto/internal/testkit/logbuf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// runSuffix tells this test run's namespaces and links from those of other
// runs on the same machine.
var runSuffix = func() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}()

var nsSeq atomic.Int32

// requireRoot skips a test that needs root (namespaces, links, routes) and
// /dev/net/tun, unless IKTO_REQUIRE_INTEGRATION=1 says this machine must run
// it: then a missing prerequisite fails the test.
func requireRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for network namespaces"
	} else if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		why = fmt.Sprintf("needs /dev/net/tun: %v", err)
	} else {
		f.Close()
		return
	}
	if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s (IKTO_REQUIRE_INTEGRATION=1)", why)
	}
	t.Skip(why)
}

// onThreadIn runs fn on a locked OS thread and puts the thread back into
// the network namespace it started in afterwards; fn may switch it. A
// thread that cannot be put back stays locked, so Go retires it instead of
// running other goroutines in the wrong namespace.
func onThreadIn(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("return to the original netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// newNamespace creates a named network namespace unique to this run and
// deletes it, with every link and route in it, when the test ends.
func newNamespace(t *testing.T) netns.NsHandle {
	t.Helper()
	name := fmt.Sprintf("ikto-rt-%s-%d", runSuffix, nsSeq.Add(1))
	var ns netns.NsHandle
	err := onThreadIn(func() error {
		var err error
		ns, err = netns.NewNamed(name) // moves the thread into ns
		return err
	})
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// addTun adds an up TUN link in ns standing in for the WireGuard device,
// which is a TUN device too when userspace WireGuard runs it. A TUN device
// is made by an ioctl in the caller's namespace, so the thread enters ns.
// Deleting the namespace deletes the link.
func addTun(t *testing.T, ns netns.NsHandle, h *netlink.Handle, name string) {
	t.Helper()
	err := onThreadIn(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI})
	})
	if err != nil {
		t.Fatalf("add tun %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("up %s: %v", name, err)
	}
}

// testHandle is a netlink handle in ns for the test's own reads and writes,
// separate from the hook's.
func testHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := openNetlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// routeLines is every route with protocol proto in ns, in any table, as
// sorted "table dst dev metric" lines: what the kernel really holds.
func routeLines(t *testing.T, h *netlink.Handle, proto int) []string {
	t.Helper()
	routes, err := listOwned(h, 0, proto, 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{}
	for _, r := range routes {
		dev := "?"
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		lines = append(lines, fmt.Sprintf("table %d %s dev %s metric %d", r.Table, r.Dst, dev, r.Priority))
	}
	sort.Strings(lines)
	return lines
}

func testLogger(t *testing.T) (hclog.Logger, *logbuf.Buffer) {
	t.Helper()
	buf := logbuf.New(t, "hook log")
	return hclog.New(&hclog.LoggerOptions{Name: "route", Output: buf, JSONFormat: true, Level: hclog.Debug}), buf
}
