package external

import (
	"errors"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev/ctrldevtest"
)

func TestOpen(t *testing.T) {
	cfg, keyTag := ctrldevtest.OpenConfig(t)
	priv := cfg.PrivateKey
	ours, err := netlink.ParseAddr("fd10:2082:5bc1::/16")
	if err != nil {
		t.Fatal(err)
	}
	peers := []wgtypes.Peer{{PublicKey: wgtypes.Key{7}}}

	tests := []struct {
		name       string
		links      *ctrldevtest.Links
		client     ctrldevtest.Client
		wantEvents []string
		wantErr    string
	}{
		{
			name:   "a running 0.3.0 device with our key, port and address: nothing written",
			links:  withAddr(ctrldevtest.NewLinks(ctrldevtest.TunLink("wg-ikto", 1420)), "wg-ikto", *ours),
			client: ctrldevtest.Client{PrivateKey: priv, ListenPort: 51820, Peers: peers},
			wantEvents: []string{
				"LinkSetUp wg-ikto",
			},
		},
		{
			name:   "a bare wireguard-go -f: key, port, mtu and address set, peers untouched",
			links:  ctrldevtest.NewLinks(ctrldevtest.TunLink("wg-ikto", 1500)),
			client: ctrldevtest.Client{Peers: peers},
			wantEvents: []string{
				"ConfigureDevice wg-ikto " + keyTag + " port=51820 peers=0 replace=false",
				"LinkSetMTU wg-ikto 1420",
				"AddrAdd wg-ikto fd10:2082:5bc1::/16",
				"LinkSetUp wg-ikto",
			},
		},
		{
			name:    "no link in this namespace",
			links:   ctrldevtest.NewLinks(),
			wantErr: "no link wg-ikto in this network namespace for the socket /var/run/wireguard/wg-ikto.sock",
		},
		{
			name:    "the socket does not answer as wireguard",
			links:   ctrldevtest.NewLinks(ctrldevtest.TunLink("wg-ikto", 1420)),
			client:  ctrldevtest.Client{DeviceErr: errors.New("unexpected EOF")},
			wantErr: "adopt wg-ikto through /var/run/wireguard/wg-ikto.sock: read device: unexpected EOF",
			wantEvents: []string{
				"wgctrl Close",
			},
		},
		{
			name:    "the port is taken",
			links:   ctrldevtest.NewLinks(ctrldevtest.TunLink("wg-ikto", 1420)),
			client:  ctrldevtest.Client{PrivateKey: priv, ListenPort: 40000, ConfigureErr: syscall.EADDRINUSE},
			wantErr: "set key and port 51820: address already in use",
			wantEvents: []string{
				"ConfigureDevice wg-ikto port=51820 peers=0 replace=false",
				"wgctrl Close",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := tt.client
			d, err := ctrldevtest.CheckOpen(t, open, cfg, wgdev.KindExternal, tt.links, &client, tt.wantEvents, tt.wantErr)
			if err != nil {
				return
			}
			got, err := d.Peers()
			if err != nil || len(got) != 1 {
				t.Errorf("peers after adopting = %v, %v; want the one it had", got, err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if tail := tt.links.Events[len(tt.links.Events)-1]; tail != "wgctrl Close" {
				t.Errorf("Close did %q, want only the client closed", tail)
			}
		})
	}
}

func withAddr(l *ctrldevtest.Links, name string, a netlink.Addr) *ctrldevtest.Links {
	l.Addrs[name] = append(l.Addrs[name], a)
	return l
}
