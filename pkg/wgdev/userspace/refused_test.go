package userspace

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
)

// A device refuses an initiation from a peer it does not have, and says so:
// two real wireguard-go devices on an in-memory bind, the first has the
// second as a peer and starts a handshake, the second has no peers. This
// holds refusedInitiation to the line the wireguard-go in use logs.
func TestRefusedInitiationsAreReported(t *testing.T) {
	binds := bindtest.NewChannelBinds()
	var keys [2]wgtypes.Key
	var refused [2]chan wgdev.Refusal
	var devs [2]*device.Device
	for i := range devs {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		refused[i] = make(chan wgdev.Refusal, 1)
		devs[i] = device.NewDevice(tuntest.NewChannelTUN().TUN(), binds[i], newLogger(slog.Default(), fmt.Sprint("wgtest", i), refused[i]))
		t.Cleanup(devs[i].Close)
		if err := devs[i].IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(k[:]), 10+i)); err != nil {
			t.Fatal(err)
		}
		if err := devs[i].Up(); err != nil {
			t.Fatal(err)
		}
	}
	// The in-memory bind's first endpoint is the other device.
	peer := keys[1].PublicKey()
	set := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:1\nallowed_ip=fd00::2/128\npersistent_keepalive_interval=1\n", hex.EncodeToString(peer[:]))
	if err := devs[0].IpcSet(set); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-refused[1]:
		if r.Answer {
			t.Errorf("the refused initiation was reported as an answer")
		}
		if r.From.Addr() != netip.MustParseAddr("127.0.0.1") || time.Since(r.At) > 10*time.Second {
			t.Errorf("refused initiation from %s at %s, want the bind's 127.0.0.1, just now", r.From, r.At)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the device without peers reported no refused initiation: does wireguard-go still log %q?", refusedInitiation)
	}
	select {
	case r := <-refused[0]:
		t.Errorf("the initiating device reported a refusal from %s", r.From)
	default:
	}
}

// answerBind is an in-memory bind that keeps the first handshake answer
// (response) its device sends, to send it again.
type answerBind struct {
	conn.Bind
	mu     sync.Mutex
	answer []byte
	to     conn.Endpoint
}

func (b *answerBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	for _, p := range bufs {
		if b.answer == nil && len(p) > 0 && p[0] == device.MessageResponseType {
			b.answer, b.to = append([]byte(nil), p...), ep
		}
	}
	b.mu.Unlock()
	return b.Bind.Send(bufs, ep)
}

// sendAgain sends the kept answer again, and reports whether there was one.
func (b *answerBind) sendAgain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.answer != nil && b.Bind.Send([][]byte{b.answer}, b.to) == nil
}

// A device refuses an answer to an initiation it no longer waits for, and
// says so: two real wireguard-go devices that have each other complete a
// handshake, then the answer is sent again (as an answer to an initiation
// that crossed the other end's comes: after the initiation's state is
// gone). This holds refusedAnswer to the line the wireguard-go in use logs.
func TestRefusedAnswersAreReported(t *testing.T) {
	binds := bindtest.NewChannelBinds()
	answers := &answerBind{Bind: binds[1]}
	var keys [2]wgtypes.Key
	var refused [2]chan wgdev.Refusal
	var devs [2]*device.Device
	for i, bind := range []conn.Bind{binds[0], answers} {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		refused[i] = make(chan wgdev.Refusal, 4)
		devs[i] = device.NewDevice(tuntest.NewChannelTUN().TUN(), bind, newLogger(slog.Default(), fmt.Sprint("wgtest", i), refused[i]))
		t.Cleanup(devs[i].Close)
		if err := devs[i].IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(k[:]), 10+i)); err != nil {
			t.Fatal(err)
		}
		if err := devs[i].Up(); err != nil {
			t.Fatal(err)
		}
	}
	first, second := keys[0].PublicKey(), keys[1].PublicKey()
	if err := devs[1].IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=fd00::1/128\n", hex.EncodeToString(first[:]))); err != nil {
		t.Fatal(err)
	}
	if err := devs[0].IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:1\nallowed_ip=fd00::2/128\npersistent_keepalive_interval=1\n", hex.EncodeToString(second[:]))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !handshakeDone(t, devs[0]) {
		if time.Now().After(deadline) {
			t.Fatal("no handshake between the two devices")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range refused {
		select {
		case r := <-refused[i]:
			t.Fatalf("device %d refused a handshake message from %s (answer %v) before any was sent again", i, r.From, r.Answer)
		default:
		}
	}
	if !answers.sendAgain() {
		t.Fatal("the answering device sent no answer")
	}
	select {
	case r := <-refused[0]:
		if !r.Answer || r.From.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("refused %+v, want an answer from the bind's 127.0.0.1", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the device reported no refused answer: does wireguard-go still log %q?", refusedAnswer)
	}
}

// handshakeDone is whether dev completed a handshake with its peer.
func handshakeDone(t *testing.T, dev *device.Device) bool {
	t.Helper()
	get, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(get, "last_handshake_time_sec=") && !strings.Contains(get, "last_handshake_time_sec=0\n")
}
