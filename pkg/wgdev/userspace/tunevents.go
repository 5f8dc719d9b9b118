package userspace

import (
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// withoutLinkEvents hides the TUN's up/down events from wireguard-go and
// passes the rest (MTU changes) through.
//
// wireguard-go answers those events by closing and reopening its UDP sockets
// from its event goroutine, on whatever OS thread that goroutine happens to
// run. In a process whose threads are all in one network namespace that is
// harmless, but a caller that runs Open on a thread locked into another
// namespace would get sockets in the wrong namespace: the TUN starts down, so
// an EventDown races our own Up, and the EventUp after the link comes up
// then rebinds elsewhere (seen in the namespace test). So the device's state
// is ours alone: Open brings it up, Close takes it down, and every socket is
// opened synchronously in Open. An operator setting the link down stops
// packets at the TUN but does not close the UDP port.
func withoutLinkEvents(t tun.Device) tun.Device {
	w := &stateOwnedTUN{Device: t, events: make(chan tun.Event, 1)}
	go w.forward()
	return w
}

type stateOwnedTUN struct {
	tun.Device
	events chan tun.Event
}

func (w *stateOwnedTUN) Events() <-chan tun.Event { return w.events }

// forward runs until the TUN closes its event channel, which it does on
// Close; wireguard-go's reader then sees ours close and stops.
func (w *stateOwnedTUN) forward() {
	defer close(w.events)
	for e := range w.Device.Events() {
		if e &^= tun.EventUp | tun.EventDown; e != 0 {
			w.events <- e
		}
	}
}

// heldTUN passes no read through until released: wireguard-go starts
// reading the TUN the moment the device is made, and a packet read before
// the device has the peer it is for is dropped. A TUN taken over from the
// agent before holds what was sent while no process read it; held, it goes
// out once the first peers are on the device (ConfigurePeers releases it).
// Held again before the device closes (drain), it leaves what comes next in
// the TUN for the device after this one.
type heldTUN struct {
	tun.Device
	mu        sync.Mutex
	open      chan struct{} // closed while reads pass
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

func holdReads(t tun.Device) *heldTUN {
	return &heldTUN{Device: t, open: make(chan struct{}), closed: make(chan struct{})}
}

// release lets reads through.
func (h *heldTUN) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.open:
	default:
		close(h.open)
	}
}

// hold stops reads again from the next one on, and reports whether they
// were passing. A read already waiting in the kernel still returns the next
// packet.
func (h *heldTUN) hold() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.open:
		h.open = make(chan struct{})
		return true
	default:
		return false
	}
}

func (h *heldTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	h.mu.Lock()
	open := h.open
	h.mu.Unlock()
	select {
	case <-open:
	case <-h.closed:
	}
	return h.Device.Read(bufs, sizes, offset)
}

// Close releases a read that waits, which then fails on the closed TUN.
// The TUN closes first: a read let through before would take what waits
// in the TUN for the next device, for a device that is closing.
func (h *heldTUN) Close() error {
	err := h.Device.Close()
	h.closeOnce.Do(func() { close(h.closed) })
	return err
}
