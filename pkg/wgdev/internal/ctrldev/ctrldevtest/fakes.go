// Package ctrldevtest is what the kernel and external backends' tests share:
// in-memory fakes of ctrldev's LinkOps and Client, and the Open test's device
// and checks. Both fakes record every call that changes something in one
// event log, so a test can compare the whole sequence with one cmp.Diff.
package ctrldevtest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
)

var (
	_ ctrldev.LinkOps = (*Links)(nil)
	_ ctrldev.Client  = (*Client)(nil)
)

// Links is an in-memory netlink: links by name, addresses by link name.
type Links struct {
	Links   map[string]netlink.Link
	Addrs   map[string][]netlink.Addr
	AddErr  error // returned by LinkAdd
	FindErr error // returned by LinkByName instead of a lookup
	Events  []string
}

// NewLinks returns fake netlink holding links.
func NewLinks(links ...netlink.Link) *Links {
	f := &Links{Links: map[string]netlink.Link{}, Addrs: map[string][]netlink.Addr{}}
	for _, l := range links {
		f.Links[l.Attrs().Name] = l
	}
	return f
}

func (f *Links) LinkByName(name string) (netlink.Link, error) {
	if f.FindErr != nil {
		return nil, f.FindErr
	}
	l, ok := f.Links[name]
	if !ok {
		return nil, netlink.LinkNotFoundError{}
	}
	return l, nil
}

func (f *Links) LinkAdd(l netlink.Link) error {
	f.Events = append(f.Events, fmt.Sprintf("LinkAdd %s type=%s mtu=%d", l.Attrs().Name, l.Type(), l.Attrs().MTU))
	if f.AddErr != nil {
		return f.AddErr
	}
	f.Links[l.Attrs().Name] = l
	return nil
}

func (f *Links) LinkSetMTU(l netlink.Link, mtu int) error {
	f.Events = append(f.Events, fmt.Sprintf("LinkSetMTU %s %d", l.Attrs().Name, mtu))
	return nil
}

func (f *Links) LinkSetUp(l netlink.Link) error {
	f.Events = append(f.Events, "LinkSetUp "+l.Attrs().Name)
	return nil
}

func (f *Links) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return f.Addrs[l.Attrs().Name], nil
}

func (f *Links) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	f.Events = append(f.Events, fmt.Sprintf("AddrAdd %s %s", l.Attrs().Name, a.IPNet))
	f.Addrs[l.Attrs().Name] = append(f.Addrs[l.Attrs().Name], *a)
	return nil
}

// Client is an in-memory wgctrl client of one device, logging into Events.
type Client struct {
	Events       *[]string
	PrivateKey   wgtypes.Key
	ListenPort   int
	Peers        []wgtypes.Peer
	DeviceErr    error // returned by Device
	ConfigureErr error // returned by ConfigureDevice
	Closes       int
}

func (c *Client) Device(name string) (*wgtypes.Device, error) {
	if c.DeviceErr != nil {
		return nil, c.DeviceErr
	}
	return &wgtypes.Device{Name: name, PrivateKey: c.PrivateKey, ListenPort: c.ListenPort, Peers: c.Peers}, nil
}

// ConfigureDevice logs "ConfigureDevice NAME [key=XXXX] [port=N] peers=N
// replace=B", where XXXX is the first four characters of the public key.
func (c *Client) ConfigureDevice(name string, cfg wgtypes.Config) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ConfigureDevice %s", name)
	if cfg.PrivateKey != nil {
		b.WriteString(" key=" + cfg.PrivateKey.PublicKey().String()[:4])
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, " port=%d", *cfg.ListenPort)
	}
	fmt.Fprintf(&b, " peers=%d replace=%t", len(cfg.Peers), cfg.ReplacePeers)
	*c.Events = append(*c.Events, b.String())
	if c.ConfigureErr != nil {
		return c.ConfigureErr
	}
	if cfg.PrivateKey != nil {
		c.PrivateKey = *cfg.PrivateKey
	}
	if cfg.ListenPort != nil {
		c.ListenPort = *cfg.ListenPort
	}
	return nil
}

func (c *Client) Close() error {
	c.Closes++
	*c.Events = append(*c.Events, "wgctrl Close")
	return nil
}

// WireguardLink is a kernel WireGuard link as netlink reports it.
func WireguardLink(name string, mtu int) netlink.Link {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	return &netlink.Wireguard{LinkAttrs: attrs}
}

// TunLink is a TUN link (what wireguard-go runs on) as netlink reports it.
func TunLink(name string, mtu int) netlink.Link {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	return &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TUN}
}

// OpenConfig is the device the kernel and external backends' Open tests
// open: wg-ikto with a fresh key, port 51820, fd10:2082:5bc1::/16 and MTU
// 1420. keyTag is how its key shows in a ConfigureDevice event.
func OpenConfig(t testing.TB) (cfg wgdev.Config, keyTag string) {
	t.Helper()
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg = wgdev.Config{
		Name:       "wg-ikto",
		PrivateKey: priv,
		ListenPort: 51820,
		Address:    netip.MustParsePrefix("fd10:2082:5bc1::/16"),
		MTU:        1420,
	}
	return cfg, "key=" + priv.PublicKey().String()[:4]
}

// Opener is a backend's open with netlink and wgctrl passed in.
type Opener func(wgdev.Config, ctrldev.LinkOps, func() (ctrldev.Client, error)) (*ctrldev.Device, error)

// CheckOpen opens cfg with open on links and client, then checks every call
// it made, in order, against wantEvents, and its error against wantErr (a
// substring; "" means success). A device it opened must be cfg's, of kind.
// It returns what open returned, for the checks that are the backend's own.
func CheckOpen(t *testing.T, open Opener, cfg wgdev.Config, kind wgdev.Kind, links *Links, client *Client, wantEvents []string, wantErr string) (*ctrldev.Device, error) {
	t.Helper()
	client.Events = &links.Events
	d, err := open(cfg, links, func() (ctrldev.Client, error) { return client, nil })
	if diff := cmp.Diff(wantEvents, links.Events); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("open = %v, want an error containing %q", err, wantErr)
		}
		return d, err
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if d.Name() != cfg.Name || d.Backend() != kind || d.PublicKey() != cfg.PrivateKey.PublicKey() {
		t.Errorf("identity = %s %s %s, want %s %s %s", d.Name(), d.Backend(), d.PublicKey(), cfg.Name, kind, cfg.PrivateKey.PublicKey())
	}
	return d, nil
}
