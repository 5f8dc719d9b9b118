package backend

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/kernel"
)

func TestPreflight(t *testing.T) {
	ok := probes{
		netAdmin: func() (bool, error) { return true, nil },
		tun:      func() error { return nil },
		udpFree:  func(int) error { return nil },
		inspect:  func(string) found { return found{} },
	}
	cfg := wgdev.Config{Name: "wg-test", ListenPort: 51820}
	for _, tc := range []struct {
		name   string
		kind   wgdev.Kind
		change func(*probes)
		want   []string // in the error; none: no error
	}{
		{name: "all there", kind: wgdev.KindAuto, change: func(*probes) {}},
		{name: "no CAP_NET_ADMIN", kind: wgdev.KindAuto, change: func(p *probes) { p.netAdmin = func() (bool, error) { return false, nil } },
			want: []string{"CAP_NET_ADMIN", "run ikto-agent as root"}},
		{name: "no TUN for userspace", kind: wgdev.KindUserspace, change: func(p *probes) { p.tun = func() error { return syscall.ENOENT } },
			want: []string{"/dev/net/tun", "modprobe tun"}},
		{name: "no TUN, auto may use the kernel", kind: wgdev.KindAuto, change: func(p *probes) { p.tun = func() error { return syscall.ENOENT } }},
		{name: "port taken", kind: wgdev.KindAuto, change: func(p *probes) { p.udpFree = func(int) error { return syscall.EADDRINUSE } },
			want: []string{"UDP port 51820 is in use", "wg_port"}},
		{name: "adopted kernel link needs nothing", kind: wgdev.KindAuto, change: func(p *probes) {
			p.inspect = func(string) found { return found{linkType: kernel.LinkType} }
			p.netAdmin = func() (bool, error) { return false, nil }
			p.udpFree = func(int) error { return syscall.EADDRINUSE }
		}},
		{name: "name taken", kind: wgdev.KindAuto, change: func(p *probes) { p.inspect = func(string) found { return found{linkType: "dummy"} } },
			want: []string{"not WireGuard"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.change(&p)
			err := preflight(tc.kind, cfg, p)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("preflight = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("preflight = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !errors.Is(err, ErrCannotOpen) && !errors.Is(err, ErrNameTaken) {
				t.Errorf("error %v matches neither ErrCannotOpen nor ErrNameTaken", err)
			}
		})
	}
}

// The real port probe: a port some socket holds is refused, and free again
// once it is let go.
func TestUDPFree(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	if err := udpFree(port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("udpFree(%d) while bound = %v, want EADDRINUSE", port, err)
	}
	c.Close()
	if err := udpFree(port); err != nil {
		t.Errorf("udpFree(%d) after close = %v, want nil", port, err)
	}
}
