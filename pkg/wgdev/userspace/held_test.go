package userspace

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// A held TUN passes no read until released, none again once held again
// (what is sent meanwhile stays queued for whoever reads next), and a read
// that waits ends when the TUN closes.
func TestHeldTUNHoldsReleasesAndHoldsAgain(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	h := holdReads(ch.TUN())
	read := func() chan error {
		done := make(chan error, 1)
		go func() {
			bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
			_, err := h.Read(bufs, sizes, 0)
			done <- err
		}()
		return done
	}
	waits := func(done chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("%s: a read passed (%v)", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	passes := func(done chan error, what string) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the read still waits", what)
		}
	}
	packet := tuntest.Ping(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))

	first := read()
	go func() { ch.Outbound <- packet }()
	waits(first, "before release")
	h.release()
	passes(first, "after release")

	if !h.hold() {
		t.Fatal("hold of passing reads reports they were not passing")
	}
	second := read()
	go func() { ch.Outbound <- packet }()
	waits(second, "held again")
	if h.hold() {
		t.Error("hold of held reads reports they were passing")
	}
	h.Close()
	passes(second, "after close")
}
