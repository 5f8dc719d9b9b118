package harness

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerView is what a device says about one peer, reduced to what ikto sets:
// allowed-ips (sorted, comma-joined) and endpoint.
type PeerView struct {
	AllowedIPs string
	Endpoint   string
}

// ExpectedView is what every other device should say about h: its claimed
// prefix, reached at its underlay address on the port it was last started
// with (the default 51820 before that).
func (h *Host) ExpectedView() PeerView {
	port := 51820
	if h.lastConfig.WGPort != 0 {
		port = h.lastConfig.WGPort
	}
	return PeerView{
		AllowedIPs: h.Prefix().String(),
		Endpoint:   netip.AddrPortFrom(h.Addr, uint16(port)).String(),
	}
}

// DeviceView reads a device's peers as public key → view, from the root
// namespace: only a userspace device is found this way (its UAPI socket is in
// the shared filesystem); Host.DeviceView finds any.
func DeviceView(dev string) (map[string]PeerView, error) {
	peers, err := DevicePeers(dev)
	if err != nil {
		return nil, err
	}
	return peerViews(peers), nil
}

func peerViews(peers []wgtypes.Peer) map[string]PeerView {
	got := map[string]PeerView{}
	for _, p := range peers {
		var ips []string
		for _, n := range p.AllowedIPs {
			ips = append(ips, n.String())
		}
		slices.Sort(ips)
		v := PeerView{AllowedIPs: strings.Join(ips, ",")}
		if p.Endpoint != nil {
			v.Endpoint = p.Endpoint.String()
		}
		got[p.PublicKey.String()] = v
	}
	return got
}

// CheckDevice is nil when h's device lists exactly the hosts of mesh other
// than h, each with its ExpectedView; otherwise the error shows the
// difference as (-want +got).
func CheckDevice(h *Host, mesh []*Host) error {
	want := map[string]PeerView{}
	names := map[string]string{}
	for _, p := range mesh {
		if p != h {
			want[p.PublicKey.String()] = p.ExpectedView()
			names[p.PublicKey.String()] = p.Name
		}
	}
	got, err := h.DeviceView()
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if maps.Equal(want, got) {
		return nil
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			fmt.Fprintf(&b, "\n  - %s %s %+v", names[k], k, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok || w != got[k] {
			fmt.Fprintf(&b, "\n  + %s %s %+v", names[k], k, got[k])
		}
	}
	return fmt.Errorf("device %s of %s, peers (-want +got):%s", h.DevName, h.Name, b.String())
}

// CheckMesh is nil when every host's device lists exactly the others.
func CheckMesh(mesh []*Host) error {
	for _, h := range mesh {
		if err := CheckDevice(h, mesh); err != nil {
			return err
		}
	}
	return nil
}
