package kernellane

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeTree is the module tree of a fake kernel: the lane's modules and a
// dependency of each kind, in modules.dep as a kernel's build writes it.
var fakeTree = map[string][]string{ // path without suffix → its dependencies
	"kernel/drivers/virtio/virtio_pci.ko":       {"kernel/drivers/virtio/virtio.ko"},
	"kernel/drivers/virtio/virtio.ko":           nil,
	"kernel/net/9p/9pnet.ko":                    nil,
	"kernel/net/9p/9pnet_virtio.ko":             {"kernel/net/9p/9pnet.ko", "kernel/drivers/virtio/virtio.ko"},
	"kernel/fs/9p/9p.ko":                        {"kernel/net/9p/9pnet.ko"},
	"kernel/drivers/net/tun.ko":                 nil,
	"kernel/drivers/net/wireguard/wireguard.ko": {"kernel/net/ipv4/udp_tunnel.ko"},
	"kernel/net/ipv4/udp_tunnel.ko":             nil,
	"kernel/drivers/net/veth.ko":                nil,
	"kernel/net/bridge/bridge.ko":               nil,
}

// fakeKernel describes one kernel to install in a fake /boot and
// /lib/modules.
type fakeKernel struct {
	version string
	suffix  string // every module's compression: "", ".xz", ".zst", ".gz", ...
	without string // a module left out of modules.dep, by name
	damaged string // a module whose file is not what its name says, by name
	noTree  bool   // no /lib/modules/VERSION at all
}

// install writes k's image and module tree under boot and modules.
func (k fakeKernel) install(t *testing.T, boot, modules string) {
	t.Helper()
	write := func(path string, data []byte) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(boot, "vmlinuz-"+k.version), []byte("not a kernel: never booted here"))
	if k.noTree {
		return
	}
	tree := filepath.Join(modules, k.version)
	var dep strings.Builder
	for path, deps := range fakeTree {
		if moduleName(path) == k.without {
			continue
		}
		dep.WriteString(path + k.suffix + ":")
		for _, d := range deps {
			dep.WriteString(" " + d + k.suffix)
		}
		dep.WriteString("\n")
		data := compressed(t, k.suffix, fakeModule(moduleName(path)))
		if moduleName(path) == k.damaged {
			data = data[:len(data)/3]
		}
		write(filepath.Join(tree, path+k.suffix), data)
	}
	write(filepath.Join(tree, "modules.dep"), []byte(dep.String()))
	write(filepath.Join(tree, "modules.builtin"), nil)
}

func TestChooseKernel(t *testing.T) {
	debian := map[string]bool{"XZ": true, "ZSTD": true} // kmod 30 as Debian 12 builds it
	old := fakeKernel{version: "6.1.0-57-amd64"}
	type passed struct{ version, why string }
	for _, tc := range []struct {
		name     string
		kernels  []fakeKernel
		modprobe map[string]bool
		want     string   // the version booted, "" for none
		passed   []passed // the kernels passed over, newest first, and a word of why
	}{
		{
			name:    "the newest, its modules plain",
			kernels: []fakeKernel{old, {version: "6.1.0-9-amd64"}},
			want:    "6.1.0-57-amd64",
		},
		{
			name:    "the newest, its modules xz",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".xz"}},
			want:    "6.12.57+deb13-amd64",
		},
		{
			name:    "the newest, its modules zstd",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".zst"}},
			want:    "6.12.57+deb13-amd64",
		},
		{
			name:     "the newest, its modules gzip, which modprobe reads",
			kernels:  []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".gz"}},
			modprobe: map[string]bool{"ZLIB": true},
			want:     "6.12.57+deb13-amd64",
		},
		{
			name:    "gzip, which modprobe does not read",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".gz"}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "does not read .gz"}},
		},
		{
			name:    "no wireguard",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".xz", without: "wireguard"}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "no module wireguard"}},
		},
		{
			name:    "no 9p",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", without: "9p"}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "no module 9p"}},
		},
		{
			name:    "a damaged boot module",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".zst", damaged: "9pnet"}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "9pnet.ko.zst: decompress"}},
		},
		{
			name:    "a compression the lane cannot read",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".bz2"}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "cannot decompress .bz2"}},
		},
		{
			name:    "no module tree",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", noTree: true}},
			want:    "6.1.0-57-amd64",
			passed:  []passed{{"6.12.57+deb13-amd64", "modules.dep"}},
		},
		{
			name: "two passed over",
			kernels: []fakeKernel{old, {version: "6.12.57+deb13-amd64", suffix: ".bz2"},
				{version: "6.16.3+deb13-amd64", suffix: ".xz", without: "veth"}},
			want: "6.1.0-57-amd64",
			passed: []passed{{"6.16.3+deb13-amd64", "no module veth"},
				{"6.12.57+deb13-amd64", "cannot decompress .bz2"}},
		},
		{
			name: "none can serve",
			kernels: []fakeKernel{{version: "6.1.0-57-amd64", without: "wireguard"},
				{version: "6.12.57+deb13-amd64", suffix: ".xz", damaged: "virtio_pci"}},
			passed: []passed{{"6.12.57+deb13-amd64", "virtio_pci.ko.xz: decompress"},
				{"6.1.0-57-amd64", "no module wireguard"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, modules := t.TempDir(), t.TempDir()
			for _, k := range tc.kernels {
				k.install(t, boot, modules)
			}
			h := kernelHost{bootDir: boot, modulesRoot: modules, modprobe: debian, modprobeSays: "kmod version 30 +ZSTD +XZ -ZLIB"}
			if tc.modprobe != nil {
				h.modprobe = tc.modprobe
			}
			k, unfit, err := h.chooseKernel("")
			if tc.want == "" {
				if err == nil || !errors.Is(err, ErrMissing) {
					t.Fatalf("chooseKernel = %s, %v; want an error wrapping ErrMissing", k.Version, err)
				}
				// The error names each kernel and why.
				for _, p := range tc.passed {
					if !strings.Contains(err.Error(), "kernel "+p.version+": ") || !strings.Contains(err.Error(), p.why) {
						t.Errorf("error %q does not name kernel %s and %q", err, p.version, p.why)
					}
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				want := Kernel{Version: tc.want, Image: filepath.Join(boot, "vmlinuz-"+tc.want), Modules: filepath.Join(modules, tc.want)}
				if diff := cmp.Diff(want, k); diff != "" {
					t.Errorf("kernel (-want +got):\n%s", diff)
				}
			}
			var got, want []string
			for _, u := range unfit {
				got = append(got, u.Kernel.Version)
			}
			for _, p := range tc.passed {
				want = append(want, p.version)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("passed over (-want +got):\n%s", diff)
			}
			for i, p := range tc.passed {
				if !strings.Contains(unfit[i].Why.Error(), p.why) {
					t.Errorf("passed over %s because %q; want it to say %q", p.version, unfit[i].Why, p.why)
				}
			}
		})
	}
}

// A kernel named with -kernel is booted or refused, never replaced.
func TestChooseNamedKernel(t *testing.T) {
	boot, modules := t.TempDir(), t.TempDir()
	fakeKernel{version: "6.1.0-57-amd64"}.install(t, boot, modules)
	fakeKernel{version: "6.12.57+deb13-amd64", suffix: ".xz", without: "wireguard"}.install(t, boot, modules)
	h := kernelHost{bootDir: boot, modulesRoot: modules, modprobe: map[string]bool{"XZ": true}}
	image := filepath.Join(boot, "vmlinuz-6.12.57+deb13-amd64")
	if _, _, err := h.chooseKernel(image); err == nil || !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "no module wireguard") {
		t.Errorf("chooseKernel(%s) = %v; want an error wrapping ErrMissing that says no module wireguard", image, err)
	}
	image = filepath.Join(boot, "vmlinuz-6.1.0-57-amd64")
	if k, _, err := h.chooseKernel(image); err != nil || k.Image != image {
		t.Errorf("chooseKernel(%s) = %+v, %v", image, k, err)
	}
	if _, _, err := (kernelHost{bootDir: t.TempDir(), modulesRoot: modules}).chooseKernel(""); err == nil || !errors.Is(err, ErrMissing) {
		t.Errorf("chooseKernel with no kernel installed = %v; want an error wrapping ErrMissing", err)
	}
}

// The initramfs carries the boot modules decompressed, under their plain
// names, in load order.
func TestInitramfsModulesDecompressed(t *testing.T) {
	for _, suffix := range []string{"", ".xz", ".zst", ".gz"} {
		boot, modules := t.TempDir(), t.TempDir()
		fakeKernel{version: "6.12.57+deb13-amd64", suffix: suffix}.install(t, boot, modules)
		k := kernelOf(filepath.Join(boot, "vmlinuz-6.12.57+deb13-amd64"), modules)
		mods, err := k.initramfsModules()
		if err != nil {
			t.Fatalf("%q: %v", suffix, err)
		}
		var names []string
		for _, m := range mods {
			names = append(names, m.name)
			if !bytes.Equal(m.data, fakeModule(moduleName(m.name))) {
				t.Errorf("%q: %s is not the module put in", suffix, m.name)
			}
		}
		want := []string{"virtio.ko", "virtio_pci.ko", "9pnet.ko", "9pnet_virtio.ko", "9p.ko"}
		if diff := cmp.Diff(want, names); diff != "" {
			t.Errorf("%q: modules (-want +got):\n%s", suffix, diff)
		}
		if script := initScript(names); !strings.Contains(script, "for m in virtio.ko virtio_pci.ko 9pnet.ko") {
			t.Errorf("%q: the init script does not insmod the plain names:\n%s", suffix, script)
		}
	}
}
