package kernel

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// recordingClient keeps the configs it is given.
type recordingClient struct {
	fakeClient
	configs []wgtypes.Config
}

func (c *recordingClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	c.configs = append(c.configs, cfg)
	return c.configureErr
}

func newRecordingDevice() (*Device, *recordingClient) {
	var events []string
	c := &recordingClient{fakeClient: fakeClient{events: &events}}
	return &Device{name: "wg0", client: c}, c
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

func TestDeviceErrorsNameTheDevice(t *testing.T) {
	d, c := newRecordingDevice()
	c.configureErr = errors.New("boom")
	err := d.ConfigurePeers([]wgtypes.PeerConfig{{PublicKey: wgtypes.Key{1}}})
	if err == nil || !strings.Contains(err.Error(), "wg0") {
		t.Errorf("ConfigurePeers = %v, want an error naming wg0", err)
	}
}

func TestPeersAndClose(t *testing.T) {
	d, c := newRecordingDevice()
	c.peers = []wgtypes.Peer{{PublicKey: wgtypes.Key{7}}}
	got, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.peers, got); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	for range 2 {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if c.closes != 1 {
		t.Errorf("wgctrl client closed %d times, want 1", c.closes)
	}
	if _, err := d.Peers(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Peers after Close = %v, want net.ErrClosed", err)
	}
	if err := d.ConfigurePeers([]wgtypes.PeerConfig{{}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ConfigurePeers after Close = %v, want net.ErrClosed", err)
	}
}
