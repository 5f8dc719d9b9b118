package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// fakeLinks is an in-memory netlink: links by name, addresses by link name,
// and a log of every call that changes something.
type fakeLinks struct {
	links   map[string]netlink.Link
	addrs   map[string][]netlink.Addr
	addErr  error // returned by LinkAdd
	findErr error // returned by LinkByName instead of a lookup
	events  []string
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if f.findErr != nil {
		return nil, f.findErr
	}
	l, ok := f.links[name]
	if !ok {
		return nil, netlink.LinkNotFoundError{}
	}
	return l, nil
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	f.events = append(f.events, fmt.Sprintf("LinkAdd %s type=%s mtu=%d", l.Attrs().Name, l.Type(), l.Attrs().MTU))
	if f.addErr != nil {
		return f.addErr
	}
	f.links[l.Attrs().Name] = l
	return nil
}

func (f *fakeLinks) LinkSetMTU(l netlink.Link, mtu int) error {
	f.events = append(f.events, fmt.Sprintf("LinkSetMTU %s %d", l.Attrs().Name, mtu))
	return nil
}

func (f *fakeLinks) LinkSetUp(l netlink.Link) error {
	f.events = append(f.events, "LinkSetUp "+l.Attrs().Name)
	return nil
}

func (f *fakeLinks) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return f.addrs[l.Attrs().Name], nil
}

func (f *fakeLinks) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	f.events = append(f.events, fmt.Sprintf("AddrAdd %s %s", l.Attrs().Name, a.IPNet))
	f.addrs[l.Attrs().Name] = append(f.addrs[l.Attrs().Name], *a)
	return nil
}

// fakeClient is an in-memory wgctrl client sharing the event log.
type fakeClient struct {
	events       *[]string
	peers        []wgtypes.Peer
	configureErr error
	closes       int
}

func (c *fakeClient) Device(name string) (*wgtypes.Device, error) {
	return &wgtypes.Device{Name: name, Peers: c.peers}, nil
}

func (c *fakeClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ConfigureDevice %s", name)
	if cfg.PrivateKey != nil {
		b.WriteString(" key=" + cfg.PrivateKey.PublicKey().String()[:4])
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, " port=%d", *cfg.ListenPort)
	}
	fmt.Fprintf(&b, " peers=%d replace=%t", len(cfg.Peers), cfg.ReplacePeers)
	*c.events = append(*c.events, b.String())
	return c.configureErr
}

func (c *fakeClient) Close() error {
	c.closes++
	*c.events = append(*c.events, "wgctrl Close")
	return nil
}

func wgLink(name string, mtu int) netlink.Link {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	return &netlink.Wireguard{LinkAttrs: attrs}
}

func addr(t *testing.T, s string) netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return *a
}

func TestOpen(t *testing.T) {
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyTag := "key=" + priv.PublicKey().String()[:4]
	cfg := wgdev.Config{
		Name:       "wg-ikto",
		PrivateKey: priv,
		ListenPort: 51820,
		Address:    netip.MustParsePrefix("fd10:2082:5bc1::/16"),
		MTU:        1420,
	}
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "wg-ikto"}}

	tests := []struct {
		name         string
		links        map[string]netlink.Link
		addrs        map[string][]netlink.Addr
		addErr       error
		findErr      error
		configureErr error
		wantEvents   []string
		wantErr      string // substring; empty means success
		wantNotSupp  bool
	}{
		{
			name:  "creates a missing link",
			links: map[string]netlink.Link{},
			wantEvents: []string{
				"LinkAdd wg-ikto type=wireguard mtu=1420",
				"AddrAdd wg-ikto fd10:2082:5bc1::/16",
				"LinkSetUp wg-ikto",
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
			},
		},
		{
			name:  "adopts an existing link that already has the address",
			links: map[string]netlink.Link{"wg-ikto": wgLink("wg-ikto", 1420)},
			addrs: map[string][]netlink.Addr{"wg-ikto": {addr(t, "fd10:2082:5bc1::/16")}},
			wantEvents: []string{
				"LinkSetUp wg-ikto",
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
			},
		},
		{
			name:  "adopts an existing link, fixes mtu, adds the address beside others",
			links: map[string]netlink.Link{"wg-ikto": wgLink("wg-ikto", 1380)},
			addrs: map[string][]netlink.Addr{"wg-ikto": {addr(t, "fd99::1/64"), addr(t, "198.18.0.1/24")}},
			wantEvents: []string{
				"LinkSetMTU wg-ikto 1420",
				"AddrAdd wg-ikto fd10:2082:5bc1::/16",
				"LinkSetUp wg-ikto",
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
			},
		},
		{
			name:  "the same ip with another prefix length is not our address",
			links: map[string]netlink.Link{"wg-ikto": wgLink("wg-ikto", 1420)},
			addrs: map[string][]netlink.Addr{"wg-ikto": {addr(t, "fd10:2082:5bc1::/48")}},
			wantEvents: []string{
				"AddrAdd wg-ikto fd10:2082:5bc1::/16",
				"LinkSetUp wg-ikto",
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
			},
		},
		{
			name:       "a link of another type is an error naming it",
			links:      map[string]netlink.Link{"wg-ikto": dummy},
			wantErr:    `link wg-ikto exists and is of type "dummy", not wireguard`,
			wantEvents: nil,
		},
		{
			name:        "no wireguard module",
			links:       map[string]netlink.Link{},
			addErr:      syscall.EOPNOTSUPP,
			wantErr:     "open wg-ikto: create wireguard link wg-ikto",
			wantNotSupp: true,
			wantEvents:  []string{"LinkAdd wg-ikto type=wireguard mtu=1420"},
		},
		{
			name:        "no wireguard module, error only as text",
			links:       map[string]netlink.Link{},
			addErr:      errors.New("operation not supported"),
			wantErr:     "create wireguard link wg-ikto",
			wantNotSupp: true,
			wantEvents:  []string{"LinkAdd wg-ikto type=wireguard mtu=1420"},
		},
		{
			name:       "permission denied is not 'not supported'",
			links:      map[string]netlink.Link{},
			addErr:     syscall.EPERM,
			wantErr:    "create wireguard link wg-ikto: operation not permitted",
			wantEvents: []string{"LinkAdd wg-ikto type=wireguard mtu=1420"},
		},
		{
			name:    "netlink lookup failure",
			links:   map[string]netlink.Link{},
			findErr: syscall.EACCES,
			wantErr: "find link wg-ikto: permission denied",
		},
		{
			name:         "key and port failure closes the client",
			links:        map[string]netlink.Link{"wg-ikto": wgLink("wg-ikto", 1420)},
			addrs:        map[string][]netlink.Addr{"wg-ikto": {addr(t, "fd10:2082:5bc1::/16")}},
			configureErr: syscall.EADDRINUSE,
			wantErr:      "open wg-ikto: set key and port 51820: address already in use",
			wantEvents: []string{
				"LinkSetUp wg-ikto",
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
				"wgctrl Close",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			links := &fakeLinks{links: tt.links, addrs: tt.addrs, addErr: tt.addErr, findErr: tt.findErr}
			if links.addrs == nil {
				links.addrs = map[string][]netlink.Addr{}
			}
			client := &fakeClient{events: &links.events, configureErr: tt.configureErr}
			d, err := open(cfg, links, func() (wgClient, error) { return client, nil })

			if diff := cmp.Diff(tt.wantEvents, links.events); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("open error = %v, want one containing %q", err, tt.wantErr)
				}
				if got := errors.Is(err, wgdev.ErrNotSupported); got != tt.wantNotSupp {
					t.Errorf("errors.Is(err, ErrNotSupported) = %t, want %t", got, tt.wantNotSupp)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if d.Name() != cfg.Name || d.PublicKey() != priv.PublicKey() || d.Backend() != wgdev.KindKernel {
				t.Errorf("identity = %s %s %s", d.Name(), d.Backend(), d.PublicKey())
			}
		})
	}
}

func TestOpenWgctrlFailure(t *testing.T) {
	links := &fakeLinks{links: map[string]netlink.Link{}, addrs: map[string][]netlink.Addr{}}
	boom := errors.New("no generic netlink")
	_, err := open(wgdev.Config{Name: "wg0", Address: netip.MustParsePrefix("fd10::1/16")}, links,
		func() (wgClient, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "wg0") {
		t.Errorf("open = %v, want %v naming wg0", err, boom)
	}
}

func TestOpenRejectsInvalidAddress(t *testing.T) {
	links := &fakeLinks{links: map[string]netlink.Link{}, addrs: map[string][]netlink.Addr{}}
	_, err := open(wgdev.Config{Name: "wg0"}, links, func() (wgClient, error) { return nil, errors.New("unreachable") })
	if err == nil || len(links.events) != 0 {
		t.Errorf("open = %v with calls %v, want an error and no calls", err, links.events)
	}
}
