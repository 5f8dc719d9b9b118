package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DevicePeers reads a device's live peers through wgctrl from the root
// namespace: a userspace device's control socket lives in the shared
// filesystem, so it is reachable whatever namespace the device is in.
func DevicePeers(devName string) ([]wgtypes.Peer, error) {
	dev, err := Device(devName)
	if err != nil {
		return nil, err
	}
	return dev.Peers, nil
}

// Device reads a whole device (key, port, peers) through wgctrl.
func Device(devName string) (*wgtypes.Device, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	defer c.Close()
	dev, err := c.Device(devName)
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w", devName, err)
	}
	return dev, nil
}

// Status is what the agent reports on GET /v1/status (docs/contract.md §7), decoded
// loosely: fields it does not know are kept in Raw.
type Status struct {
	Self    StatusRecord `json:"self"`
	Backend string       `json:"backend"`
	Device  string       `json:"device"`
	NATS    struct {
		Connected bool   `json:"connected"`
		Server    string `json:"server"`
	} `json:"nats"`
	State  string       `json:"state"`
	Claim  string       `json:"claim"`
	Synced bool         `json:"synced"`
	Peers  []StatusPeer `json:"peers"`
	// Rejected are the records the agent refuses, with their reasons.
	Rejected []StatusRejected `json:"rejected"`
	Raw      map[string]any   `json:"-"`
}

// StatusRejected is one refused record.
type StatusRejected struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// StatusRecord carries the record fields of docs/contract.md §4.
type StatusRecord struct {
	Name             string `json:"name"`
	PublicKey        string `json:"public_key"`
	AdvertiseAddress string `json:"advertise_address"`
	AllowedIP        string `json:"allowed_ip"`
	WGPort           int    `json:"wg_port"`
}

// StatusPeer is one peer as the agent sees it on its device.
type StatusPeer struct {
	StatusRecord
	Endpoint        string   `json:"endpoint"`
	AllowedIPs      []string `json:"allowed_ips"`
	LatestHandshake any      `json:"latest_handshake"`
	RxBytes         int64    `json:"rx_bytes"`
	TxBytes         int64    `json:"tx_bytes"`
}

// statusTimeout bounds one status request.
const statusTimeout = 5 * time.Second

// Status asks the host's agent for its status over the admin socket.
func (h *Host) Status(ctx context.Context) (*Status, error) {
	return SocketStatus(ctx, h.SocketPath)
}

// SocketStatus does GET http://ikto/v1/status over the unix socket path.
func SocketStatus(ctx context.Context, path string) (*Status, error) {
	body, err := SocketGet(ctx, path, "/v1/status")
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("status from %s: %w", path, err)
	}
	if err := json.Unmarshal(body, &st.Raw); err != nil {
		return nil, fmt.Errorf("status from %s: %w", path, err)
	}
	return &st, nil
}

// SocketGet does an HTTP GET of urlPath over the unix socket at path and
// returns the body of a 200 answer.
func SocketGet(ctx context.Context, path, urlPath string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ikto"+urlPath, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s on %s: %w", urlPath, path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s on %s: %w", urlPath, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s on %s: %w", urlPath, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on %s: %s: %s", urlPath, path, resp.Status, body)
	}
	return body, nil
}
