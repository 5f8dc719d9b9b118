package userspace

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

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
