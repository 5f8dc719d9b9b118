package backend

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/userspace"
)

// ErrCannotOpen is wrapped by Preflight's error when this host cannot make
// its device at all: no CAP_NET_ADMIN, no /dev/net/tun for a userspace
// device, or its UDP port held by another socket.
var ErrCannotOpen = errors.New("cannot make the wireguard device")

// probes are what Preflight asks of the system, replaced in tests.
type probes struct {
	netAdmin func() (bool, error)      // the process holds CAP_NET_ADMIN
	tun      func() error              // /dev/net/tun opens
	udpFree  func(port int) error      // nothing holds the UDP port
	inspect  func(wgdev.Config) found  // what is under the device name
	nets     func() ([]hostNet, error) // this host's addresses and routes
}

func realProbes() probes {
	return probes{netAdmin: hasNetAdmin, tun: openTUN, udpFree: udpFree, inspect: inspectFor, nets: hostNets}
}

// Preflight reports, without making anything, whether Open(kind, cfg) can
// succeed as far as this host decides it: the mesh (cfg.Address's prefix)
// clear of every other interface's addresses and routes (CheckMeshCIDR),
// the name free or adoptable (Check), and for a device that must be made, CAP_NET_ADMIN, /dev/net/tun
// when it may be a userspace one, and its UDP port free. The agent asks
// before it writes to the bucket, so a host that cannot join claims
// nothing. Each error names the cause and the fix. An adopted device needs
// none of it: its process already holds the port.
func Preflight(kind wgdev.Kind, cfg wgdev.Config) error {
	return preflight(kind, cfg, realProbes())
}

func preflight(kind wgdev.Kind, cfg wgdev.Config, p probes) error {
	// The device's address carries the mesh's length: its route would be
	// the mesh's, whether the device is made or adopted.
	if cfg.Address.IsValid() {
		nets, err := p.nets()
		if err != nil {
			return fmt.Errorf("check mesh_cidr %s against this host's addresses and routes: %w", cfg.Address.Masked(), err)
		}
		var left []string
		if cfg.TUN != nil {
			if name, err := userspace.TUNName(cfg.TUN); err == nil {
				left = append(left, name) // renamed while no agent ran: Open releases it
			}
		}
		if err := checkMeshCIDR(cfg.Address.Masked(), cfg.Name, nets, left...); err != nil {
			return err
		}
	}
	f := p.inspect(cfg)
	c, err := choose(kind, cfg.Name, f)
	if err != nil {
		return err
	}
	if c == useExternal || f.linkType != "" {
		return nil // adopted: it is there, with its port
	}
	admin, err := p.netAdmin()
	if err != nil {
		return fmt.Errorf("%w %s: read this process's capabilities: %w", ErrCannotOpen, cfg.Name, err)
	}
	if !admin {
		return fmt.Errorf("%w %s: this process lacks CAP_NET_ADMIN; run ikto-agent as root or give it the capability (the shipped unit does: AmbientCapabilities=CAP_NET_ADMIN)",
			ErrCannotOpen, cfg.Name)
	}
	if c == useEmbedded || c == kernelElseEmbedded {
		if err := p.tun(); err != nil {
			if c == useEmbedded {
				return fmt.Errorf("%w %s: the userspace backend needs /dev/net/tun: %w; load the tun module (modprobe tun), or in a container pass the device (--device /dev/net/tun)",
					ErrCannotOpen, cfg.Name, err)
			}
			// Auto: the kernel module may serve without TUN; Open says
			// which failed if neither does.
		}
	}
	if cfg.ListenPort > 0 {
		if err := p.udpFree(cfg.ListenPort); err != nil {
			return fmt.Errorf("%w %s: UDP port %d is in use (%w); another WireGuard device or program holds it (ss -ulpn 'sport = :%d' shows which): stop it or set another wg_port",
				ErrCannotOpen, cfg.Name, cfg.ListenPort, err, cfg.ListenPort)
		}
	}
	return nil
}

// hasNetAdmin reads the effective capability set of this process.
func hasNetAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0, nil
}

func openTUN() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// udpFree binds the port on every address, as WireGuard does, and lets go.
func udpFree(port int) error {
	for _, network := range []string{"udp4", "udp6"} {
		c, err := net.ListenUDP(network, &net.UDPAddr{Port: port})
		if err != nil {
			if network == "udp6" && errors.Is(err, unix.EAFNOSUPPORT) {
				continue // no IPv6 on this host
			}
			return err
		}
		if err := c.Close(); err != nil {
			return err
		}
	}
	return nil
}
