package kernel

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev/ctrldevtest"
)

var wgLink = ctrldevtest.WireguardLink

func addr(t *testing.T, s string) netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return *a
}

func TestOpen(t *testing.T) {
	cfg, keyTag := ctrldevtest.OpenConfig(t)
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
			links := &ctrldevtest.Links{Links: tt.links, Addrs: tt.addrs, AddErr: tt.addErr, FindErr: tt.findErr}
			if links.Addrs == nil {
				links.Addrs = map[string][]netlink.Addr{}
			}
			client := &ctrldevtest.Client{ConfigureErr: tt.configureErr}
			_, err := ctrldevtest.CheckOpen(t, open, cfg, wgdev.KindKernel, links, client, tt.wantEvents, tt.wantErr)
			if got := errors.Is(err, wgdev.ErrNotSupported); got != tt.wantNotSupp {
				t.Errorf("errors.Is(err, ErrNotSupported) = %t, want %t", got, tt.wantNotSupp)
			}
		})
	}
}

func TestOpenWgctrlFailure(t *testing.T) {
	links := ctrldevtest.NewLinks()
	boom := errors.New("no generic netlink")
	_, err := open(wgdev.Config{Name: "wg0", Address: netip.MustParsePrefix("fd10::1/16")}, links,
		func() (ctrldev.Client, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "wg0") {
		t.Errorf("open = %v, want %v naming wg0", err, boom)
	}
}

func TestOpenRejectsInvalidAddress(t *testing.T) {
	links := ctrldevtest.NewLinks()
	_, err := open(wgdev.Config{Name: "wg0"}, links, func() (ctrldev.Client, error) { return nil, errors.New("unreachable") })
	if err == nil || len(links.Events) != 0 {
		t.Errorf("open = %v with calls %v, want an error and no calls", err, links.Events)
	}
}
