package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"time"
)

// Client talks to an agent's admin socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, http: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Get fetches path (e.g. "/v1/status") and returns the body.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ikto"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("agent socket %s: permission denied: %s", c.Socket, deniedHint(c.Socket))
	}
	if err != nil {
		return nil, fmt.Errorf("agent socket %s: %w (is ikto-agent running? pass -s to name its socket)", c.Socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("agent socket %s: read %s: %w", c.Socket, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent socket %s: GET %s: %s", c.Socket, path, resp.Status)
	}
	return body, nil
}

// Status fetches and decodes GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	body, err := c.Get(ctx, "/v1/status")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("agent socket %s: decode status: %w", c.Socket, err)
	}
	return s, nil
}
