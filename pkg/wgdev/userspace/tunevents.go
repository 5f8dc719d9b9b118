package userspace

import "golang.zx2c4.com/wireguard/tun"

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
