package filter_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/ikto-mesh/ikto/internal/testkit"
	"github.com/ikto-mesh/ikto/plugins/firewall/filter"
	"github.com/ikto-mesh/ikto/plugins/firewall/internal/nstest"
	"github.com/ikto-mesh/ikto/plugins/sdk"
)

const (
	wgPort   = 51820
	appPort  = 7000
	device   = "wgt0" // a veth standing in for the WireGuard device
	waitTime = 10 * time.Second
)

// packetLab is four namespaces: host runs the hook; member is a mesh peer
// reaching host over the underlay (IPv4 and IPv6) and over the device link;
// outsider is on the underlay but no peer; vm sits behind host in host's
// prefix. Addresses are drawn per run from 198.18.0.0/15 and fd00::/8.
type packetLab struct {
	host, member, outsider, vm *nstest.NS
	hook                       *filter.Hook
	conn                       *nftables.Conn
	node                       sdk.Node
	peers                      []sdk.Peer // member-v4 (underlay IPv4) and member-v6

	hostV4, memberV4, hostV4Out, outsiderV4 netip.Addr
	hostV6, memberV6, hostV6Out, outsiderV6 netip.Addr
	hostMesh, memberMesh, foreignMesh, vm6  netip.Addr

	mu       sync.Mutex
	received map[string]bool // payloads that reached a listener
	dropped  []string        // payloads that must never reach one
}

func newPacketLab(t *testing.T) *packetLab {
	l := &packetLab{
		host: nstest.New(t), member: nstest.New(t), outsider: nstest.New(t), vm: nstest.New(t),
		received: map[string]bool{},
	}
	v4 := [4]byte{198, 18 + byte(rand.IntN(2)), byte(rand.IntN(256)), 0}
	at4 := func(last byte) netip.Addr { b := v4; b[3] = last; return netip.AddrFrom4(b) }
	l.hostV4, l.memberV4, l.hostV4Out, l.outsiderV4 = at4(1), at4(2), at4(5), at4(6)
	var ula [16]byte
	ula[0] = 0xfd
	for i := 1; i < 6; i++ {
		ula[i] = byte(rand.IntN(256))
	}
	at6 := func(subnet, last byte) netip.Addr { b := ula; b[7], b[15] = subnet, last; return netip.AddrFrom16(b) }
	l.hostV6, l.memberV6, l.hostV6Out, l.outsiderV6 = at6(1, 1), at6(1, 2), at6(2, 1), at6(2, 2)
	meshByte := byte(rand.IntN(256))
	if meshByte == ula[1] {
		meshByte++ // keep the mesh's /16 clear of the underlay's /48
	}
	mesh := fmt.Sprintf("fd%02x", meshByte)
	mp := func(s string) netip.Prefix { return netip.MustParsePrefix(mesh + s) }
	ma := func(s string) netip.Addr { return netip.MustParseAddr(mesh + s) }
	l.hostMesh, l.memberMesh, l.foreignMesh, l.vm6 = ma(":1::1"), ma(":2::1"), ma(":99::1"), ma(":1:0:1::2")
	l.node = sdk.Node{
		Self:   sdk.Peer{Name: "host", Prefix: mp(":1::/48"), Endpoint: netip.AddrPortFrom(l.hostV4, wgPort)},
		Mesh:   mp("::/16"),
		Device: device, ListenPort: wgPort,
	}
	l.peers = []sdk.Peer{
		{Name: "member-v4", Endpoint: netip.AddrPortFrom(l.memberV4, wgPort), Prefix: mp(":2::/48")},
		{Name: "member-v6", Endpoint: netip.AddrPortFrom(l.memberV6, wgPort), Prefix: mp(":3::/48")},
	}
	l.wire(t, mp)
	l.hook = filter.New(filter.WithNetNS(l.host.Fd()))
	l.conn = nftConn(t, l.host)
	return l
}

// wire builds the links, addresses and routes.
func (l *packetLab) wire(t *testing.T, mp func(string) netip.Prefix) {
	pfx := func(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
	nstest.Veth(t, l.host, "up0", l.member, "up0")
	l.host.AddAddr(t, "up0", pfx(l.hostV4, 30))
	l.host.AddAddr(t, "up0", pfx(l.hostV6, 64))
	l.member.AddAddr(t, "up0", pfx(l.memberV4, 30))
	l.member.AddAddr(t, "up0", pfx(l.memberV6, 64))
	nstest.Veth(t, l.host, "up1", l.outsider, "up0")
	l.host.AddAddr(t, "up1", pfx(l.hostV4Out, 30))
	l.host.AddAddr(t, "up1", pfx(l.hostV6Out, 64))
	l.outsider.AddAddr(t, "up0", pfx(l.outsiderV4, 30))
	l.outsider.AddAddr(t, "up0", pfx(l.outsiderV6, 64))

	// The device link carries mesh addresses only, routed as ikto routes
	// them: the whole mesh into the device. Neighbours are pinned, since a
	// real WireGuard device has no neighbour discovery to be counted.
	nstest.Veth(t, l.host, device, l.member, "wgm0")
	l.host.AddAddr(t, device, pfx(l.hostMesh, 128))
	l.host.AddRoute(t, l.node.Mesh, device)
	l.member.AddAddr(t, "wgm0", pfx(l.memberMesh, 128))
	l.member.AddAddr(t, "wgm0", pfx(l.foreignMesh, 128))
	l.member.AddRoute(t, l.node.Self.Prefix, "wgm0")
	for _, a := range []netip.Addr{l.memberMesh, l.foreignMesh} {
		l.host.Neigh(t, device, a, l.member.MAC(t, "wgm0"))
	}
	l.member.Neigh(t, "wgm0", l.hostMesh, l.host.MAC(t, device))
	l.member.Neigh(t, "wgm0", l.vm6, l.host.MAC(t, device))

	// The VM gets a /64 of host's prefix; host forwards to it.
	nstest.Veth(t, l.host, "vm0", l.vm, "eth0")
	l.host.AddAddr(t, "vm0", mp(":1:0:1::1/64"))
	l.vm.AddAddr(t, "eth0", pfx(l.vm6, 64))
	l.host.Neigh(t, "vm0", l.vm6, l.vm.MAC(t, "eth0"))
	l.host.Sysctl(t, "net/ipv6/conf/all/forwarding", "1")

	l.listen(t, l.host, wgPort)
	l.listen(t, l.host, appPort)
	l.listen(t, l.vm, appPort)
}

// listen records every payload that reaches port in ns.
func (l *packetLab) listen(t *testing.T, ns *nstest.NS, port uint16) {
	c := ns.ListenUDP(t, netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return // closed by the test's cleanup
			}
			l.mu.Lock()
			l.received[string(buf[:n])] = true
			l.mu.Unlock()
		}
	}()
}

func (l *packetLab) got(payload string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.received[payload]
}

// packetCase is one kind of packet and what must become of it.
type packetCase struct {
	name   string
	from   *nstest.NS
	src    netip.Addr
	dst    netip.AddrPort
	dropBy string // the counter that must count it; "" when it must arrive
}

// check sends the case's packet (again at each poll, bounded by the wait)
// until it arrives, or until its counter has counted every one sent.
func (l *packetLab) check(t *testing.T, pc packetCase) {
	t.Helper()
	var c *net.UDPConn
	err := pc.from.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pc.src, 0)), net.UDPAddrFromAddrPort(pc.dst))
		return err
	})
	if err != nil {
		t.Fatalf("%s: socket: %v", pc.name, err)
	}
	defer c.Close()
	payload := fmt.Sprintf("%s %d", pc.name, rand.Uint64())
	send := func() error {
		_, err := c.Write([]byte(payload))
		return err
	}
	if pc.dropBy == "" {
		testkit.Eventually(t, waitTime, pc.name+": packet arrives", func() error {
			if l.got(payload) {
				return nil
			}
			if err := send(); err != nil {
				return err
			}
			return errors.New("not received yet")
		})
		return
	}
	l.mu.Lock()
	l.dropped = append(l.dropped, payload)
	l.mu.Unlock()
	base, sent := readCounter(t, l.conn, "ikto", pc.dropBy), uint64(0)
	testkit.Eventually(t, waitTime, pc.name+": counter "+pc.dropBy+" moves", func() error {
		if readCounter(t, l.conn, "ikto", pc.dropBy) > base {
			return nil
		}
		if err := send(); err != nil {
			return err
		}
		sent++
		return errors.New("counter has not moved yet")
	})
	testkit.Eventually(t, waitTime, pc.name+": counter counts exactly the packets sent", func() error {
		if got := readCounter(t, l.conn, "ikto", pc.dropBy) - base; got != sent {
			return fmt.Errorf("counted %d, sent %d", got, sent)
		}
		return nil
	})
}

// TestPackets sends real packets through the table: members reach the
// WireGuard port and this host's prefix, others are dropped and counted,
// Apply's updates take effect at once, a restart keeps the counts, and
// after Stop nothing is dropped any more.
func TestPackets(t *testing.T) {
	l := newPacketLab(t)
	if err := l.hook.Configure(t.Context(), l.node); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := l.hook.Apply(t.Context(), sdk.Diff(nil, l.peers)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	hostWG4, hostWG6 := netip.AddrPortFrom(l.hostV4, wgPort), netip.AddrPortFrom(l.hostV6, wgPort)
	outWG4, outWG6 := netip.AddrPortFrom(l.hostV4Out, wgPort), netip.AddrPortFrom(l.hostV6Out, wgPort)
	hostApp, vmApp := netip.AddrPortFrom(l.hostMesh, appPort), netip.AddrPortFrom(l.vm6, appPort)
	for _, pc := range []packetCase{
		{name: "member to the WireGuard port over IPv4", from: l.member, src: l.memberV4, dst: hostWG4},
		{name: "member to the WireGuard port over IPv6", from: l.member, src: l.memberV6, dst: hostWG6},
		{name: "outsider to the WireGuard port over IPv4", from: l.outsider, src: l.outsiderV4, dst: outWG4, dropBy: filter.CounterWGPortDrops},
		{name: "outsider to the WireGuard port over IPv6", from: l.outsider, src: l.outsiderV6, dst: outWG6, dropBy: filter.CounterWGPortDrops},
		{name: "outsider to another port", from: l.outsider, src: l.outsiderV4, dst: netip.AddrPortFrom(l.hostV4Out, appPort)},
		{name: "peer prefix to this host over the device", from: l.member, src: l.memberMesh, dst: hostApp},
		{name: "foreign source to this host over the device", from: l.member, src: l.foreignMesh, dst: hostApp, dropBy: filter.CounterPrefixDrops},
		{name: "peer prefix forwarded to a VM", from: l.member, src: l.memberMesh, dst: vmApp},
		{name: "foreign source forwarded to a VM", from: l.member, src: l.foreignMesh, dst: vmApp, dropBy: filter.CounterPrefixDrops},
	} {
		t.Run(pc.name, func(t *testing.T) { l.check(t, pc) })
	}

	t.Run("a peer that leaves is dropped", func(t *testing.T) {
		if err := l.hook.Apply(t.Context(), sdk.Diff(l.peers, l.peers[1:])); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		l.check(t, packetCase{name: "left peer to the WireGuard port", from: l.member, src: l.memberV4, dst: hostWG4, dropBy: filter.CounterWGPortDrops})
		l.check(t, packetCase{name: "left peer's prefix to this host", from: l.member, src: l.memberMesh, dst: hostApp, dropBy: filter.CounterPrefixDrops})
		l.check(t, packetCase{name: "remaining peer to the WireGuard port", from: l.member, src: l.memberV6, dst: hostWG6})
	})

	t.Run("a restarted hook keeps the counts", func(t *testing.T) {
		before := map[string]uint64{}
		for _, name := range []string{filter.CounterWGPortDrops, filter.CounterPrefixDrops} {
			before[name] = readCounter(t, l.conn, "ikto", name)
		}
		l.hook = filter.New(filter.WithNetNS(l.host.Fd()))
		if err := l.hook.Configure(t.Context(), l.node); err != nil {
			t.Fatalf("Configure: %v", err)
		}
		counts, err := l.hook.Counts()
		if err != nil {
			t.Fatalf("Counts: %v", err)
		}
		for name, want := range before {
			if want == 0 || counts[name].Packets != want {
				t.Errorf("counter %s = %d after the restart, want %d (and not 0)", name, counts[name].Packets, want)
			}
		}
		l.check(t, packetCase{name: "remaining peer after the restart", from: l.member, src: l.memberV6, dst: hostWG6})
	})

	t.Run("after Stop nothing is dropped", func(t *testing.T) {
		if err := l.hook.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		l.check(t, packetCase{name: "outsider after Stop", from: l.outsider, src: l.outsiderV4, dst: outWG4})
	})

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.dropped {
		if l.received[p] {
			t.Errorf("%q was counted as dropped but reached a listener", p)
		}
	}
}
