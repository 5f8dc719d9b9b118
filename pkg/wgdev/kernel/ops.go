package kernel

import (
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// linkOps is the part of netlink Open uses; tests substitute a fake.
type linkOps interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
}

// wgClient is the part of *wgctrl.Client the device uses.
type wgClient interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

var _ wgClient = (*wgctrl.Client)(nil)

// netlinkOps calls the netlink package functions, which open a fresh socket
// per request in the calling thread's network namespace.
type netlinkOps struct{}

func (netlinkOps) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (netlinkOps) LinkAdd(link netlink.Link) error              { return netlink.LinkAdd(link) }
func (netlinkOps) LinkSetMTU(link netlink.Link, mtu int) error  { return netlink.LinkSetMTU(link, mtu) }
func (netlinkOps) LinkSetUp(link netlink.Link) error            { return netlink.LinkSetUp(link) }
func (netlinkOps) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return netlink.AddrList(link, family)
}
func (netlinkOps) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	return netlink.AddrAdd(link, addr)
}

func newWgctrlClient() (wgClient, error) { return wgctrl.New() }
