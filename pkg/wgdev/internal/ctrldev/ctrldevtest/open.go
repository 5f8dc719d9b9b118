package ctrldevtest

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/ctrldev"
)

// OpenConfig is the device the kernel and external backends' Open tests
// open: wg-ikto with a fresh key, port 51820, fd10:2082:5bc1::/16 and MTU
// 1420. keyTag is how its key shows in a ConfigureDevice event.
func OpenConfig(t testing.TB) (cfg wgdev.Config, keyTag string) {
	t.Helper()
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg = wgdev.Config{
		Name:       "wg-ikto",
		PrivateKey: priv,
		ListenPort: 51820,
		Address:    netip.MustParsePrefix("fd10:2082:5bc1::/16"),
		MTU:        1420,
	}
	return cfg, "key=" + priv.PublicKey().String()[:4]
}

// Opener is a backend's open with netlink and wgctrl passed in.
type Opener func(wgdev.Config, ctrldev.LinkOps, func() (ctrldev.Client, error)) (*ctrldev.Device, error)

// CheckOpen opens cfg with open on links and client, then checks every call
// it made, in order, against wantEvents, and its error against wantErr (a
// substring; "" means success). A device it opened must be cfg's, of kind.
// It returns what open returned, for the checks that are the backend's own.
func CheckOpen(t *testing.T, open Opener, cfg wgdev.Config, kind wgdev.Kind, links *Links, client *Client, wantEvents []string, wantErr string) (*ctrldev.Device, error) {
	t.Helper()
	client.Events = &links.Events
	d, err := open(cfg, links, func() (ctrldev.Client, error) { return client, nil })
	if diff := cmp.Diff(wantEvents, links.Events); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("open = %v, want an error containing %q", err, wantErr)
		}
		return d, err
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if d.Name() != cfg.Name || d.Backend() != kind || d.PublicKey() != cfg.PrivateKey.PublicKey() {
		t.Errorf("identity = %s %s %s, want %s %s %s", d.Name(), d.Backend(), d.PublicKey(), cfg.Name, kind, cfg.PrivateKey.PublicKey())
	}
	return d, nil
}
