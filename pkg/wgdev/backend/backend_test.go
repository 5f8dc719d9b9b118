package backend

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// fakeBackend is a fake device that reports a chosen backend name.
type fakeBackend struct {
	*fake.Device
	backend wgdev.Kind
}

func (f fakeBackend) Backend() wgdev.Kind { return f.backend }

func TestOpen(t *testing.T) {
	notSupported := fmt.Errorf("open wg0: create wireguard link wg0: %w", wgdev.ErrNotSupported)
	denied := errors.New("open wg0: create wireguard link wg0: operation not permitted")
	userspaceFailed := errors.New("open wg0: create tun: no /dev/net/tun")

	tests := []struct {
		name         string
		kind         wgdev.Kind
		kernelErr    error
		userspaceErr error
		wantCalls    []string
		wantBackend  wgdev.Kind
		wantErr      error
		wantLog      string
	}{
		{name: "auto with the module", kind: "auto", wantCalls: []string{"kernel"}, wantBackend: "kernel", wantLog: "backend=kernel"},
		{name: "empty means auto", kind: "", wantCalls: []string{"kernel"}, wantBackend: "kernel", wantLog: "backend=kernel"},
		{name: "auto falls back when not supported", kind: "auto", kernelErr: notSupported, wantCalls: []string{"kernel", "userspace"}, wantBackend: "userspace", wantLog: "backend=userspace"},
		{name: "auto does not fall back on other errors", kind: "auto", kernelErr: denied, wantCalls: []string{"kernel"}, wantErr: denied},
		{name: "auto reports the fallback's failure", kind: "auto", kernelErr: notSupported, userspaceErr: userspaceFailed, wantCalls: []string{"kernel", "userspace"}, wantErr: userspaceFailed},
		{name: "kernel only", kind: "kernel", kernelErr: notSupported, wantCalls: []string{"kernel"}, wantErr: wgdev.ErrNotSupported},
		{name: "userspace only", kind: "userspace", wantCalls: []string{"userspace"}, wantBackend: "userspace", wantLog: "backend=userspace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []string
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := wgdev.Config{Name: "wg0"}
			o := openers{
				kernel: func(cfg wgdev.Config) (wgdev.Device, error) {
					calls = append(calls, "kernel")
					if tt.kernelErr != nil {
						return nil, tt.kernelErr
					}
					return fakeBackend{fake.New(cfg), "kernel"}, nil
				},
				userspace: func(cfg wgdev.Config, _ *slog.Logger) (wgdev.Device, error) {
					calls = append(calls, "userspace")
					if tt.userspaceErr != nil {
						return nil, tt.userspaceErr
					}
					return fakeBackend{fake.New(cfg), "userspace"}, nil
				},
			}
			d, err := open(tt.kind, cfg, log, o)
			if diff := cmp.Diff(tt.wantCalls, calls); diff != "" {
				t.Errorf("backends tried (-want +got):\n%s", diff)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("open = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if got := d.Backend(); got != tt.wantBackend {
				t.Errorf("Backend() = %q, want %q", got, tt.wantBackend)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q does not contain %q", logs.String(), tt.wantLog)
			}
		})
	}
}

func TestOpenUnknownKind(t *testing.T) {
	_, err := Open("wireguard-rs", wgdev.Config{Name: "wg0"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"wireguard-rs"`) || !strings.Contains(err.Error(), "wg0") {
		t.Errorf("Open = %v, want an error naming the kind and the device", err)
	}
}
