package backend

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ikto-mesh/ikto/pkg/internal/wgtest"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/internal/netnstest"
)

// Check and Open against real links in a namespace of the test's own: what
// an operator may have left under wg_dev_name.
func TestCheckAndOpenReal(t *testing.T) {
	netnstest.Require(t, "wireguard-go")
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "iktb-"+sfx)
	names := map[string]string{
		"foreign":  "iktbd" + sfx,
		"tun":      "iktbt" + sfx,
		"external": "iktbe" + sfx,
		"free":     "iktbf" + sfx,
	}
	ns.IP(t, "link", "add", names["foreign"], "type", "bridge") // no dummy module on every test machine
	ns.IP(t, "tuntap", "add", "dev", names["tun"], "mode", "tun")
	wggo := ns.StartWireguardGo(t, names["external"])

	tests := []struct {
		what, kind string
		wantErr    string // "" = nil
	}{
		{"foreign", "auto", `link ` + names["foreign"] + ` exists and is of type "bridge", not WireGuard`},
		{"foreign", "userspace", `of type "bridge"`},
		{"tun", "auto", `of type "tuntap", not WireGuard (no wireguard-go answers on /var/run/wireguard/` + names["tun"] + `.sock)`},
		{"external", "auto", ""},
		{"external", "userspace", ""},
		{"external", "kernel", "which wg_backend kernel cannot drive"},
		{"free", "auto", ""},
		{"free", "userspace", ""},
	}
	for _, tt := range tests {
		t.Run(tt.what+"/"+tt.kind, func(t *testing.T) {
			err := ns.Do(func() error { return Check(wgdev.Kind(tt.kind), names[tt.what]) })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check = %v, want ErrNameTaken containing %q", err, tt.wantErr)
			}
		})
	}

	priv := wgtest.PrivateKey(t)
	cfg := wgdev.Config{Name: names["external"], PrivateKey: priv, ListenPort: 51820, Address: netip.MustParsePrefix("fd10:9::1/16")}
	var d wgdev.Device
	if err := ns.Do(func() (err error) { d, err = Open(wgdev.KindAuto, cfg, nil); return err }); err != nil {
		t.Fatalf("Open auto on an external wireguard-go: %v", err)
	}
	if d.Backend() != wgdev.KindExternal {
		t.Errorf("Backend() = %q, want %q", d.Backend(), wgdev.KindExternal)
	}
	d.Close()
	if !wggo.Running() {
		t.Error("closing the adopted device stopped wireguard-go")
	}

	cfg.Name = names["foreign"]
	err := ns.Do(func() error { _, err := Open(wgdev.KindAuto, cfg, nil); return err })
	if !errors.Is(err, ErrNameTaken) {
		t.Errorf("Open on a bridge = %v, want ErrNameTaken", err)
	}
	if out := ns.IP(t, "-o", "link", "show", "dev", names["foreign"]); strings.Contains(out, ",UP") {
		t.Errorf("the refused bridge was touched: %s", out)
	}
}

// A kernel WireGuard link under the name is adopted by auto and kernel and
// refused by userspace. Only where the kernel has the module: the kernel
// lane requires it (IKTO_TEST_WG_BACKEND=kernel); elsewhere it is skipped.
func TestCheckAndOpenKernelLink(t *testing.T) {
	netnstest.Require(t)
	sfx := netnstest.Suffix(t)
	ns := netnstest.NewNamespace(t, "iktk-"+sfx)
	name := "iktk" + sfx
	if out, err := exec.Command("ip", "-n", ns.Name, "link", "add", name, "type", "wireguard").CombinedOutput(); err != nil {
		if os.Getenv("IKTO_TEST_WG_BACKEND") == "kernel" {
			t.Fatalf("IKTO_TEST_WG_BACKEND=kernel but no wireguard link: %v: %s", err, out)
		}
		t.Skipf("no kernel wireguard here: %s", out)
	}
	for kind, wantErr := range map[wgdev.Kind]bool{wgdev.KindAuto: false, wgdev.KindKernel: false, wgdev.KindUserspace: true} {
		err := ns.Do(func() error { return Check(kind, name) })
		if got := errors.Is(err, ErrNameTaken); got != wantErr {
			t.Errorf("Check(%s) on a kernel link = %v, want ErrNameTaken %t", kind, err, wantErr)
		}
	}
	priv := wgtest.PrivateKey(t)
	cfg := wgdev.Config{Name: name, PrivateKey: priv, ListenPort: 51820, Address: netip.MustParsePrefix("fd10:9::1/16")}
	var logs bytes.Buffer
	d, err := openLogged(ns, wgdev.KindAuto, cfg, &logs)
	if err != nil {
		t.Fatalf("Open auto on a kernel link: %v", err)
	}
	d.Close()
	if d.Backend() != wgdev.KindKernel || !strings.Contains(logs.String(), "adopted=true") {
		t.Errorf("Backend() = %q, log %q; want kernel, adopted", d.Backend(), logs.String())
	}
}

// The TUN an embedded device ran on, kept open past the device (as systemd's
// fd store keeps it past the agent), is the next device's: the same link,
// with its address, never gone; the next Open takes it over.
func TestEmbeddedDeviceTakesOverTheTUNLeft(t *testing.T) {
	left := embeddedDeviceLeft(t, "iktr")
	ns, nl, cfg, kept := left.ns, left.nl, left.cfg, left.tun
	var d wgdev.Device
	before, err := nl.LinkByName(cfg.Name)
	if err != nil {
		t.Fatalf("the TUN went with the device although a copy was kept: %v", err)
	}
	// Without the copy the name is a bare TUN nobody serves.
	err = ns.Do(func() error { _, err := Open(wgdev.KindAuto, cfg, nil); return err })
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("Open without the TUN left = %v, want ErrNameTaken", err)
	}
	cfg.TUN = kept
	if err := ns.Do(func() error { return Preflight(wgdev.KindAuto, cfg) }); err != nil {
		t.Fatalf("Preflight with the TUN left: %v", err)
	}
	if err := ns.Do(func() (err error) { d, err = Open(wgdev.KindAuto, cfg, nil); return err }); err != nil {
		t.Fatalf("Open with the TUN left: %v", err)
	}
	defer d.Close()
	if d.Backend() != wgdev.KindUserspace {
		t.Errorf("Backend() = %q, want %q", d.Backend(), wgdev.KindUserspace)
	}
	after, err := nl.LinkByName(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Attrs().Index != before.Attrs().Index {
		t.Errorf("link index %d after, %d before: the TUN was made again", after.Attrs().Index, before.Attrs().Index)
	}
	if out := ns.IP(t, "-6", "addr", "show", "dev", cfg.Name); !strings.Contains(out, "fd10:9::1/16") {
		t.Errorf("the address is gone:\n%s", out)
	}
	if _, err := d.Peers(); err != nil {
		t.Errorf("the device on the TUN left does not answer: %v", err)
	}
}

// leftDevice is an embedded device an agent ran and stopped under systemd:
// closed, its TUN kept open by a copy (the fd store's), in a namespace of
// the test's own.
type leftDevice struct {
	ns  *netnstest.Namespace
	nl  *netlink.Handle
	cfg wgdev.Config // as the device was opened, without a TUN
	tun *os.File     // the copy kept
}

// embeddedDeviceLeft opens an embedded device named prefix plus the test's
// suffix, keeps a copy of its TUN and closes it.
func embeddedDeviceLeft(t *testing.T, prefix string) leftDevice {
	t.Helper()
	netnstest.Require(t)
	sfx := netnstest.Suffix(t)
	l := leftDevice{ns: netnstest.NewNamespace(t, prefix+"-"+sfx)}
	l.nl = l.ns.Netlink(t)
	l.cfg = wgdev.Config{Name: prefix + sfx, PrivateKey: wgtest.PrivateKey(t), ListenPort: 51820, Address: netip.MustParsePrefix("fd10:9::1/16")}
	var d wgdev.Device
	if err := l.ns.Do(func() (err error) { d, err = Open(wgdev.KindUserspace, l.cfg, nil); return err }); err != nil {
		t.Fatal(err)
	}
	tunOf, ok := d.(interface{ TUN() *os.File })
	if !ok || tunOf.TUN() == nil {
		t.Fatalf("an embedded device (%T) gives no TUN to keep", d)
	}
	kept, err := dupFile(tunOf.TUN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kept.Close() })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	l.tun = kept
	return l
}

// openLogged is Open inside ns, logging to logs.
func openLogged(ns *netnstest.Namespace, kind wgdev.Kind, cfg wgdev.Config, logs *bytes.Buffer) (wgdev.Device, error) {
	var d wgdev.Device
	err := ns.Do(func() (err error) {
		d, err = Open(kind, cfg, slog.New(slog.NewTextHandler(logs, nil)))
		return err
	})
	return d, err
}

// dupFile is another descriptor of f's open file, as a service manager
// holds one.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	cerr := rc.Control(func(fd uintptr) { nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(err, cerr); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// A TUN left that is no longer the link of the device's name — the link
// deleted, or renamed, while no agent ran — is released, and the device is
// made as on a first start: a restart never fails on what the store kept.
func TestATUNLeftThatIsNoLongerTheLinkIsReleased(t *testing.T) {
	netnstest.Require(t)
	for _, tt := range []struct{ name, change string }{
		{"link deleted", "del"},
		{"link renamed", "rename"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			left := embeddedDeviceLeft(t, "iktl")
			ns, nl, cfg, kept := left.ns, left.nl, left.cfg, left.tun
			// The operator, while no agent runs.
			old := "iktlold" + cfg.Name[len("iktl"):]
			if tt.change == "del" {
				ns.IP(t, "link", "del", cfg.Name)
			} else {
				ns.IP(t, "link", "set", cfg.Name, "name", old)
			}
			cfg.TUN = kept
			if err := ns.Do(func() error { return Preflight(wgdev.KindUserspace, cfg) }); err != nil {
				t.Fatalf("Preflight with a TUN left that is no longer the link: %v", err)
			}
			var logs bytes.Buffer
			d, err := openLogged(ns, wgdev.KindUserspace, cfg, &logs)
			if err != nil {
				t.Fatalf("Open with a TUN left that is no longer the link: %v", err)
			}
			defer d.Close()
			if !strings.Contains(logs.String(), "is no longer link "+cfg.Name) {
				t.Errorf("the release is not logged:\n%s", logs.String())
			}
			if _, err := d.Peers(); err != nil {
				t.Errorf("the device made anew does not answer: %v", err)
			}
			if _, err := kept.Stat(); err == nil {
				t.Error("the TUN left is still open in this process")
			}
			// Closed by the only holder, a renamed link goes with it.
			if _, err := nl.LinkByName(old); err == nil {
				t.Errorf("link %s, the renamed TUN, is still there", old)
			}
		})
	}
}
