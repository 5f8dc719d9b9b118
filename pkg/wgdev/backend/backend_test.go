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

var (
	nothing      = found{}
	kernelLink   = found{linkType: "wireguard"}
	externalTun  = found{linkType: "tuntap", socketLive: true}
	bareTun      = found{linkType: "tuntap"}
	inheritedTun = found{linkType: "tuntap", inherited: true}
	dummy        = found{linkType: "dummy"}
	staleSocket  = found{} // a dead process's socket file does not answer: nothing
	socketNoLink = found{socketLive: true}
)

// TestChoose is the whole policy: what is adopted, what is made, what is
// refused, for every wg_backend.
func TestChoose(t *testing.T) {
	tests := []struct {
		kind    wgdev.Kind
		found   found
		want    choice
		wantErr string // substring of the refusal
	}{
		{kind: "auto", found: kernelLink, want: useKernel},
		{kind: "auto", found: externalTun, want: useExternal},
		{kind: "auto", found: nothing, want: kernelElseEmbedded},
		{kind: "", found: nothing, want: kernelElseEmbedded},
		{kind: "auto", found: socketNoLink, want: kernelElseEmbedded},
		{kind: "auto", found: bareTun, wantErr: `link wg0 exists and is of type "tuntap", not WireGuard (no wireguard-go answers on /var/run/wireguard/wg0.sock); remove it (ip link del wg0) or choose another wg_dev_name`},
		{kind: "auto", found: dummy, wantErr: `link wg0 exists and is of type "dummy", not WireGuard`},

		{kind: "kernel", found: kernelLink, want: useKernel},
		{kind: "kernel", found: nothing, want: useKernel},
		{kind: "kernel", found: socketNoLink, want: useKernel},
		{kind: "kernel", found: externalTun, wantErr: `wg0 is a userspace WireGuard device (link type "tuntap", served on /var/run/wireguard/wg0.sock by another process), which wg_backend kernel cannot drive; set wg_backend to auto or userspace`},
		{kind: "kernel", found: dummy, wantErr: `of type "dummy", not WireGuard`},

		{kind: "userspace", found: externalTun, want: useExternal},
		{kind: "userspace", found: nothing, want: useEmbedded},
		{kind: "userspace", found: staleSocket, want: useEmbedded},
		{kind: "userspace", found: kernelLink, wantErr: "wg0 is a kernel WireGuard link, which wg_backend userspace cannot drive; set wg_backend to auto or kernel, or delete it (ip link del wg0)"},
		{kind: "userspace", found: socketNoLink, wantErr: "a process answers on /var/run/wireguard/wg0.sock but there is no link wg0 in this network namespace"},
		{kind: "userspace", found: bareTun, wantErr: `of type "tuntap", not WireGuard`},

		// The TUN the agent before left in systemd's fd store.
		{kind: "auto", found: inheritedTun, want: useEmbedded},
		{kind: "userspace", found: inheritedTun, want: useEmbedded},
		{kind: "kernel", found: inheritedTun, wantErr: "wg0 is the TUN of the embedded device the agent before ran, which wg_backend kernel cannot drive"},

		{kind: "wireguard-rs", found: nothing, wantErr: `unknown wg_backend "wireguard-rs"`},
		{kind: "auto", found: found{err: errors.New("find link wg0: permission denied")}, wantErr: "permission denied"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%+v", tt.kind, tt.found), func(t *testing.T) {
			got, err := choose(tt.kind, "wg0", tt.found)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("choose = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				taken := tt.found.linkType != "" || tt.found.socketLive
				if taken && !errors.Is(err, ErrNameTaken) {
					t.Errorf("error %v does not wrap ErrNameTaken", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("choose = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	notSupported := fmt.Errorf("open wg0: create wireguard link wg0: %w", wgdev.ErrNotSupported)
	denied := errors.New("open wg0: create wireguard link wg0: operation not permitted")
	userspaceFailed := errors.New("open wg0: create tun: no /dev/net/tun")

	tests := []struct {
		name         string
		kind         wgdev.Kind
		found        found
		kernelErr    error
		userspaceErr error
		wantCalls    []string
		wantBackend  wgdev.Kind
		wantErr      error
		wantLog      string
	}{
		{name: "auto with the module", kind: "auto", wantCalls: []string{"kernel"}, wantBackend: "kernel", wantLog: "backend=kernel adopted=false"},
		{name: "auto adopts a kernel link", kind: "auto", found: kernelLink, wantCalls: []string{"kernel"}, wantBackend: "kernel", wantLog: "backend=kernel adopted=true"},
		{name: "auto adopts an external wireguard-go", kind: "auto", found: externalTun, wantCalls: []string{"external"}, wantBackend: "external", wantLog: "backend=external adopted=true"},
		{name: "userspace adopts an external wireguard-go", kind: "userspace", found: externalTun, wantCalls: []string{"external"}, wantBackend: "external", wantLog: "backend=external adopted=true"},
		{name: "empty means auto", kind: "", wantCalls: []string{"kernel"}, wantBackend: "kernel", wantLog: "backend=kernel"},
		{name: "auto falls back when not supported", kind: "auto", kernelErr: notSupported, wantCalls: []string{"kernel", "userspace"}, wantBackend: "userspace", wantLog: "backend=userspace"},
		{name: "auto does not fall back on other errors", kind: "auto", kernelErr: denied, wantCalls: []string{"kernel"}, wantErr: denied},
		{name: "auto reports the fallback's failure", kind: "auto", kernelErr: notSupported, userspaceErr: userspaceFailed, wantCalls: []string{"kernel", "userspace"}, wantErr: userspaceFailed},
		{name: "kernel only", kind: "kernel", kernelErr: notSupported, wantCalls: []string{"kernel"}, wantErr: wgdev.ErrNotSupported},
		{name: "userspace only", kind: "userspace", wantCalls: []string{"userspace"}, wantBackend: "userspace", wantLog: "backend=userspace"},
		{name: "a dummy link opens nothing", kind: "auto", found: dummy, wantErr: ErrNameTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []string
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := wgdev.Config{Name: "wg0"}
			opener := func(name string, err error) func(wgdev.Config) (wgdev.Device, error) {
				return func(cfg wgdev.Config) (wgdev.Device, error) {
					calls = append(calls, name)
					if err != nil {
						return nil, err
					}
					return fakeBackend{fake.New(cfg), wgdev.Kind(name)}, nil
				}
			}
			o := openers{
				kernel:   opener("kernel", tt.kernelErr),
				external: opener("external", nil),
				userspace: func(cfg wgdev.Config, _ *slog.Logger) (wgdev.Device, error) {
					return opener("userspace", tt.userspaceErr)(cfg)
				},
			}
			d, err := open(tt.kind, cfg, log, tt.found, o)
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
