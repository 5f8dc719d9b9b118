package userspace

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireIntegration skips a test that needs root and /dev/net/tun, unless
// IKTO_REQUIRE_INTEGRATION=1 says this machine must run it.
func requireIntegration(t *testing.T) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = "needs root"
	case !fileExists("/dev/net/tun"):
		why = "needs /dev/net/tun"
	default:
		return
	}
	if os.Getenv("IKTO_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("%s (IKTO_REQUIRE_INTEGRATION=1)", why)
	}
	t.Skip(why)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runSuffix is random per test run: device names must be unique machine-wide
// because /var/run/wireguard is shared by every namespace.
func runSuffix(t *testing.T) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// inNamespace runs fn on this goroutine's OS thread switched into ns, and
// switches back. wireguard-go creates the TUN, its netlink listener and the
// UDP sockets synchronously in Open, so they all land in ns even though its
// goroutines later run on other threads. If the thread cannot be switched
// back it stays locked, so Go retires it instead of reusing it.
func inNamespace(t *testing.T, ns netns.NsHandle, fn func() error) error {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Fatalf("restore netns: %v (thread left locked)", err)
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// newNamespace creates the named namespace with lo up and deletes it in
// cleanup. netns.NewNamed moves the calling thread into the new namespace,
// so it runs inside inNamespace to be moved back.
func newNamespace(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	var ns netns.NsHandle
	err = inNamespace(t, orig, func() error {
		var err error
		ns, err = netns.NewNamed(name)
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
	h := nsHandle(t, ns)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("netns %s: lo up: %v", name, err)
	}
	return ns
}

// nsHandle is a netlink handle whose sockets live in ns, so no thread
// switching is needed to configure links there.
func nsHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethPair joins a and b with a veth pair carrying addrA and addrB (underlay,
// inside 198.18.0.0/15). Deleting a namespace deletes its end, so cleanup is
// the namespaces'.
func vethPair(t *testing.T, a, b netns.NsHandle, nameA, nameB string, addrA, addrB netip.Prefix) {
	t.Helper()
	ha, hb := nsHandle(t, a), nsHandle(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(b)}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", nameA, nameB, err)
	}
	for _, end := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Prefix
	}{{ha, nameA, addrA}, {hb, nameB, addrB}} {
		l, err := end.h.LinkByName(end.name)
		if err != nil {
			t.Fatalf("find %s: %v", end.name, err)
		}
		a, err := netlink.ParseAddr(end.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		if err := end.h.AddrAdd(l, a); err != nil {
			t.Fatalf("address %s on %s: %v", end.addr, end.name, err)
		}
		if err := end.h.LinkSetUp(l); err != nil {
			t.Fatalf("up %s: %v", end.name, err)
		}
	}
}
