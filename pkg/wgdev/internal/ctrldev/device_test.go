package ctrldev_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev/ctrldevtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/devicetest"
)

// recordingClient keeps the configs it is given.
type recordingClient struct {
	ctrldevtest.Client
	configs []wgtypes.Config
}

func (c *recordingClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	c.configs = append(c.configs, cfg)
	return c.ConfigureErr
}

func newRecordingDevice() (*ctrldev.Device, *recordingClient) {
	var events []string
	c := &recordingClient{Client: ctrldevtest.Client{Events: &events}}
	return ctrldev.New("wg0", wgdev.KindExternal, wgtypes.Key{9}, c), c
}

func TestConfigurePeersSendsOneDeltaCall(t *testing.T) {
	d, c := newRecordingDevice()
	changes := []wgtypes.PeerConfig{
		{PublicKey: wgtypes.Key{1}, UpdateOnly: true, Endpoint: &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 51820}},
		{PublicKey: wgtypes.Key{2}, Remove: true},
	}
	if err := d.ConfigurePeers(nil); err != nil {
		t.Fatal(err)
	}
	if err := d.ConfigurePeers(changes); err != nil {
		t.Fatal(err)
	}
	want := []wgtypes.Config{{Peers: changes}}
	if diff := cmp.Diff(want, c.configs); diff != "" {
		t.Errorf("wgctrl configs (-want +got):\n%s", diff)
	}
}

func TestDeviceReportsItsIdentity(t *testing.T) {
	d, _ := newRecordingDevice()
	if d.Name() != "wg0" || d.Backend() != wgdev.KindExternal || d.PublicKey() != (wgtypes.Key{9}) {
		t.Errorf("identity = %s %s %s", d.Name(), d.Backend(), d.PublicKey())
	}
}

func TestDeviceErrorsNameTheDevice(t *testing.T) {
	d, c := newRecordingDevice()
	c.ConfigureErr = errors.New("boom")
	err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: wgtypes.Key{1}}})
	if err == nil || !strings.Contains(err.Error(), "wg0") {
		t.Errorf("ConfigurePeers = %v, want an error naming wg0", err)
	}
}

func TestPeersAndClose(t *testing.T) {
	d, c := newRecordingDevice()
	c.Peers = []wgtypes.Peer{{PublicKey: wgtypes.Key{7}}}
	got, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.Peers, got); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	devicetest.CheckClose(t, d)
	if c.Closes != 1 {
		t.Errorf("wgctrl client closed %d times, want 1", c.Closes)
	}
}

// SetIdentity writes only what differs: wireguard-go rebinds its sockets on
// any listen_port it is sent, so an adopted device must not be sent its own.
func TestSetIdentityWritesOnlyTheDifference(t *testing.T) {
	key := wgtypes.Key{1, 2, 3}
	other := wgtypes.Key{4, 5, 6}
	keyTag := "key=" + key.PublicKey().String()[:4]
	tests := []struct {
		name     string
		haveKey  wgtypes.Key
		havePort int
		port     int
		want     []string
	}{
		{name: "same key and port: nothing", haveKey: key, havePort: 51820, port: 51820},
		{name: "port 0 takes the bound port", haveKey: key, havePort: 40000, port: 0},
		{name: "other port", haveKey: key, havePort: 40000, port: 51820,
			want: []string{"ConfigureDevice wg0 port=51820 peers=0 replace=false"}},
		{name: "other key", haveKey: other, havePort: 51820, port: 51820,
			want: []string{"ConfigureDevice wg0 " + keyTag + " peers=0 replace=false"}},
		{name: "fresh device", port: 51820,
			want: []string{"ConfigureDevice wg0 " + keyTag + " port=51820 peers=0 replace=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var events []string
			c := &ctrldevtest.Client{Events: &events, PrivateKey: tt.haveKey, ListenPort: tt.havePort}
			if err := ctrldev.SetIdentity(c, "wg0", key, tt.port); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, events); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetIdentityFailures(t *testing.T) {
	var events []string
	c := &ctrldevtest.Client{Events: &events, DeviceErr: errors.New("no socket")}
	if err := ctrldev.SetIdentity(c, "wg0", wgtypes.Key{1}, 1); err == nil || !strings.Contains(err.Error(), "no socket") {
		t.Errorf("SetIdentity with an unreadable device = %v", err)
	}
	c = &ctrldevtest.Client{Events: &events, ConfigureErr: errors.New("address in use")}
	if err := ctrldev.SetIdentity(c, "wg0", wgtypes.Key{1}, 1); err == nil || !strings.Contains(err.Error(), "port 1: address in use") {
		t.Errorf("SetIdentity with a busy port = %v", err)
	}
}
