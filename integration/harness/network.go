package harness

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// NetworkOptions tunes NewNetworkWithOptions. The zero value is what
// NewNetwork uses.
type NetworkOptions struct {
	// StaticNeighbours adds permanent neighbour (ARP) entries between every
	// pair of hosts and the bridge, so that tests with many hosts do not
	// depend on ARP resolution (the neighbour table's gc thresholds are
	// shared by all namespaces on the machine).
	StaticNeighbours bool
	// Dir is where the per-host directories (keys, configs, sockets, logs)
	// go. Empty: a new temporary directory that Close removes.
	Dir string
}

// Network is one test run's underlay: a bridge in the root namespace holding
// the .1 of a random /24 inside 198.18.0.0/15, and one namespace per host
// plugged into it with a veth pair. It also picks the run's mesh CIDR.
type Network struct {
	// Suffix is the per-run random tag carried by every name the network
	// makes (bridge, veths, namespaces, WireGuard devices).
	Suffix string
	// Bridge is the bridge's interface name in the root namespace.
	Bridge string
	// Subnet is the underlay /24; Gateway (.1) is the bridge's address,
	// which is where servers in the root namespace (NATS) listen.
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Mesh is the run's mesh CIDR, an fdXX::/16 in which every host gets a
	// random /48.
	Mesh netip.Prefix
	// Dir holds one directory per host.
	Dir string

	opts       NetworkOptions
	ownDir     bool
	bridgeMAC  string
	state      *stateFile
	mu         sync.Mutex
	hosts      []*Host
	procs      []*Process
	closers    []func() error // run after the processes stop
	nextHostIP int
	prefixes   map[netip.Prefix]bool
	closed     bool
}

// NewNetwork creates the bridge and picks the run's subnets. Close removes
// everything it and its hosts made.
func NewNetwork() (*Network, error) { return NewNetworkWithOptions(NetworkOptions{}) }

// NewNetworkWithOptions is NewNetwork with options.
func NewNetworkWithOptions(opts NetworkOptions) (*Network, error) {
	sweepStale()
	suffix, err := randomSuffix()
	if err != nil {
		return nil, err
	}
	n := &Network{
		Suffix:     suffix,
		Bridge:     "ikb" + suffix,
		opts:       opts,
		nextHostIP: 2,
		prefixes:   map[netip.Prefix]bool{},
	}
	if n.state, err = newStateFile(suffix); err != nil {
		return nil, err
	}
	if opts.Dir != "" {
		n.Dir = opts.Dir
	} else {
		if n.Dir, err = os.MkdirTemp("", "ikto-"+suffix+"-"); err != nil {
			n.state.remove()
			return nil, fmt.Errorf("network %s: temp dir: %w", suffix, err)
		}
		n.ownDir = true
	}
	if err := n.setUp(); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func (n *Network) setUp() error {
	mesh, err := pickMesh()
	if err != nil {
		return err
	}
	n.Mesh = mesh
	n.state.update(func(s *stateData) { s.Links = append(s.Links, n.Bridge) })
	// A bridge without an address of its own takes the lowest MAC of its
	// ports, which would change under the pinned neighbour entries.
	mac, err := randomMAC()
	if err != nil {
		return err
	}
	if _, err := ip("link", "add", n.Bridge, "address", mac, "type", "bridge"); err != nil {
		return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
	}
	// The bridge needs no IPv6: keep it from soliciting routers on its own.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+n.Bridge+"/disable_ipv6", []byte("1"), 0o644)
	if err := n.claimSubnet(); err != nil {
		return err
	}
	if _, err := ip("link", "set", n.Bridge, "up"); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", n.Bridge, err)
	}
	n.bridgeMAC = mac
	return nil
}

// claimSubnet gives the bridge the .1 of a random /24 in 198.18.0.0/15 that
// nothing on the machine uses. Another run may pick the same /24 at the same
// moment, so it checks again after adding the address and moves on if it lost.
func (n *Network) claimSubnet() error {
	const tries = 20
	for range tries {
		subnet, err := randomSubnet()
		if err != nil {
			return err
		}
		if used, err := subnetInUse(subnet, ""); err != nil {
			return err
		} else if used {
			continue
		}
		gw := subnet.Addr().Next()
		if _, err := ip("addr", "add", netip.PrefixFrom(gw, 24).String(), "dev", n.Bridge); err != nil {
			return fmt.Errorf("address bridge %s: %w", n.Bridge, err)
		}
		if used, err := subnetInUse(subnet, n.Bridge); err != nil {
			return err
		} else if used {
			if _, err := ip("addr", "flush", "dev", n.Bridge); err != nil {
				return fmt.Errorf("unaddress bridge %s: %w", n.Bridge, err)
			}
			continue
		}
		n.Subnet, n.Gateway = subnet, gw
		return nil
	}
	return fmt.Errorf("no free /24 in %s after %d tries", underlayRange, tries)
}

var hostName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// AddHost creates a namespace plugged into the bridge, with the next free
// underlay address, a WireGuard device name unique on the machine, a private
// key, and a random /48 of the mesh as its private address.
func (n *Network) AddHost(name string) (*Host, error) {
	if !hostName.MatchString(name) {
		return nil, fmt.Errorf("host name %q: use 1-20 lower-case letters, digits and '-'", name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("add host %s: network closed", name)
	}
	for _, h := range n.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("add host %s: a host of that name exists", name)
		}
	}
	if n.nextHostIP > 254 {
		return nil, fmt.Errorf("add host %s: the /24 is full", name)
	}
	idx := n.nextHostIP
	n.nextHostIP++
	b := n.Subnet.Addr().As4()
	b[3] = byte(idx)
	h := &Host{
		Name:      name,
		Namespace: "ikto-" + n.Suffix + "-" + name,
		Addr:      netip.AddrFrom4(b),
		DevName:   fmt.Sprintf("ik%sw%d", n.Suffix, idx),
		Dir:       filepath.Join(n.Dir, name),
		veth:      fmt.Sprintf("ikv%s%d", n.Suffix, idx),
		net:       n,
	}
	n.state.update(func(s *stateData) {
		s.Namespaces = append(s.Namespaces, h.Namespace)
		s.Links = append(s.Links, h.veth)
		s.Devices = append(s.Devices, h.DevName)
	})
	// Registered before it is plumbed, so Close removes a half-made host.
	n.hosts = append(n.hosts, h)
	if err := n.plumb(h); err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	if err := h.prepare(n.Mesh, n.uniquePrefix); err != nil {
		return nil, fmt.Errorf("add host %s: %w", name, err)
	}
	return h, nil
}

func (n *Network) uniquePrefix(bits int) (netip.Prefix, error) {
	for range 100 {
		p, err := randomPrefix(n.Mesh, bits)
		if err != nil {
			return netip.Prefix{}, err
		}
		if !n.prefixes[p] {
			n.prefixes[p] = true
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /%d in %s", bits, n.Mesh)
}

func (n *Network) plumb(h *Host) error {
	steps := [][]string{
		{"netns", "add", h.Namespace},
		{"link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.Namespace},
		{"link", "set", h.veth, "master", n.Bridge, "up"},
		{"-n", h.Namespace, "addr", "add", netip.PrefixFrom(h.Addr, 24).String(), "dev", "eth0"},
		{"-n", h.Namespace, "link", "set", "lo", "up"},
		{"-n", h.Namespace, "link", "set", "eth0", "up"},
	}
	for _, args := range steps {
		if _, err := ip(args...); err != nil {
			return err
		}
	}
	mac, err := linkMAC(h.Namespace, "eth0")
	if err != nil {
		return err
	}
	h.MAC = mac
	if n.opts.StaticNeighbours {
		return n.addNeighbours(h)
	}
	return nil
}

// addNeighbours pins h's MAC in the bridge's and every other host's table and
// theirs in h's.
func (n *Network) addNeighbours(h *Host) error {
	pin := func(ns, dev string, addr netip.Addr, mac string) error {
		args := []string{"neigh", "replace", addr.String(), "lladdr", mac, "dev", dev, "nud", "permanent"}
		if ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		_, err := ip(args...)
		return err
	}
	if err := pin("", n.Bridge, h.Addr, h.MAC); err != nil {
		return err
	}
	if err := pin(h.Namespace, "eth0", n.Gateway, n.bridgeMAC); err != nil {
		return err
	}
	for _, o := range n.hosts {
		if o == h || o.MAC == "" {
			continue
		}
		if err := pin(h.Namespace, "eth0", o.Addr, o.MAC); err != nil {
			return err
		}
		if err := pin(o.Namespace, "eth0", h.Addr, h.MAC); err != nil {
			return err
		}
	}
	return nil
}

// linkMAC reads an interface's MAC, in namespace ns ("" = root).
func linkMAC(ns, dev string) (string, error) {
	args := []string{"-o", "link", "show", "dev", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := ip(args...)
	if err != nil {
		return "", fmt.Errorf("read MAC of %s: %w", dev, err)
	}
	fields := strings.Fields(out)
	for i, f := range fields {
		if f == "link/ether" && i+1 < len(fields) {
			return fields[i+1], nil
		}
	}
	return "", fmt.Errorf("read MAC of %s: no link/ether in %q", dev, out)
}

// Hosts returns the hosts added so far, in order.
func (n *Network) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

func (n *Network) track(p *Process) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("network closed")
	}
	n.procs = append(n.procs, p)
	n.state.update(func(s *stateData) {
		s.Processes = append(s.Processes, stateProcess{PID: p.PID, Start: processStart(p.PID)})
	})
	return nil
}

// StopProcesses stops every process the network started, all at once:
// SIGTERM, then SIGKILL by PID after a grace period. The network stays up.
// A demo calls it before stopping NATS, so agents do not see the server go.
func (n *Network) StopProcesses() error {
	n.mu.Lock()
	procs := n.procs
	n.mu.Unlock()
	var (
		errs []error
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	for _, p := range procs {
		wg.Go(func() {
			if err := p.Stop(closeGrace); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// closeGrace is how long Close lets agents stop on SIGTERM before it kills them.
const closeGrace = 3 * time.Second

// Close stops every process the network started (SIGTERM, then SIGKILL by
// PID), deletes every namespace (which takes the in-namespace veth ends and
// the userspace WireGuard TUN devices with it), the veths and the bridge, and
// the per-host directories when it made them. It is idempotent and returns
// every failure.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.hosts
	n.mu.Unlock()

	var errs []error
	if err := n.StopProcesses(); err != nil {
		errs = append(errs, err)
	}
	n.mu.Lock()
	closers := n.closers
	n.mu.Unlock()
	for _, c := range closers {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range hosts {
		if err := h.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := ip("link", "del", n.Bridge); err != nil && linkExists(n.Bridge) {
		errs = append(errs, fmt.Errorf("delete bridge %s: %w", n.Bridge, err))
	}
	if n.ownDir && n.Dir != "" && os.Getenv("IKTO_KEEP_DIR") == "" {
		if err := os.RemoveAll(n.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", n.Dir, err))
		}
	}
	if len(errs) == 0 {
		n.state.remove()
	} else {
		slog.Warn("network cleanup incomplete; the next run sweeps it", "suffix", n.Suffix, "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}
