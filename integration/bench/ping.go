package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// inNamespace runs f on an OS thread that has entered the network namespace
// ns (a name under /run/netns). Sockets f opens belong to that namespace for
// good and can be used from any goroutine afterwards. The thread is never
// handed back to the scheduler (its goroutine ends while locked, so Go
// discards it): no other code ever runs in the wrong namespace.
func inNamespace(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// pinger sends ICMPv6 echo requests from one host's namespace and notes when
// each target first answers. It stands in for ping(8), which would cost a
// process per probe: with 90 pairs that alone would take longer than the
// figure it measures.
type pinger struct {
	host *harness.Host
	conn *icmp.PacketConn
	id   int

	mu    sync.Mutex
	first map[netip.Addr]time.Time // target → first reply
}

func newPinger(h *harness.Host, id int) (*pinger, error) {
	p := &pinger{host: h, id: id & 0xffff, first: map[netip.Addr]time.Time{}}
	err := inNamespace(h.Namespace, func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		p.conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket on %s: %w", h.Name, err)
	}
	go p.receive()
	return p, nil
}

// receive records echo replies to this pinger until the socket closes.
func (p *pinger) receive() {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		now := time.Now()
		m, err := icmp.ParseMessage(ipv6.ICMPTypeEchoReply.Protocol(), buf[:n])
		if err != nil || m.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		ip, ok2 := from.(*net.IPAddr)
		if !ok || !ok2 || echo.ID != p.id {
			continue
		}
		addr, _ := netip.AddrFromSlice(ip.IP)
		p.mu.Lock()
		if _, seen := p.first[addr]; !seen {
			p.first[addr] = now
		}
		p.mu.Unlock()
	}
}

// reset forgets every reply, before a new launch.
func (p *pinger) reset() {
	p.mu.Lock()
	clear(p.first)
	p.mu.Unlock()
}

// forget drops the replies of targets, before they are measured again.
func (p *pinger) forget(targets ...netip.Addr) {
	p.mu.Lock()
	for _, t := range targets {
		delete(p.first, t)
	}
	p.mu.Unlock()
}

// pending lists the targets that have not answered yet.
func (p *pinger) pending(targets []netip.Addr) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.Addr
	for _, t := range targets {
		if _, ok := p.first[t]; !ok {
			out = append(out, t)
		}
	}
	return out
}

// pingInterval is how often, on average, an unanswered target is probed
// again.
const pingInterval = 10 * time.Millisecond

// pingUntilAnswered probes every target about every pingInterval until each
// has answered once, and returns when the last one did. Sends fail while the
// WireGuard device is not there yet (no route): that is expected and retried.
//
// Each pinger starts at a random phase and jitters its interval. Pingers in
// lock step would make WireGuard's handshakes cross (both ends initiating
// in the same instant, so both are discarded) again and again, since
// wireguard-go re-initiates for queued data exactly five seconds after its
// last attempt; real traffic is not synchronised like that.
func (p *pinger) pingUntilAnswered(ctx context.Context, targets []netip.Addr, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := time.NewTimer(rand.N(pingInterval))
	defer wait.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: %d of %d targets never answered a ping: %v", p.host.Name, len(p.pending(targets)), len(targets), p.pending(targets))
		case <-wait.C:
		}
		wait.Reset(pingInterval/2 + rand.N(pingInterval))
		left := p.pending(targets)
		if len(left) == 0 {
			break
		}
		for _, t := range left {
			msg := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("ikto-bench")}}
			b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
			if err != nil {
				return time.Time{}, err
			}
			_, _ = p.conn.WriteTo(b, &net.IPAddr{IP: t.AsSlice()})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, t := range targets {
		if p.first[t].After(last) {
			last = p.first[t]
		}
	}
	return last, nil
}

func (p *pinger) close() error {
	if err := p.conn.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close icmp socket on %s: %w", p.host.Name, err)
	}
	return nil
}
