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
	const newest = "6.12.57+deb13-amd64"
	old := fakeKernel{version: "6.1.0-57-amd64"}
	type passed struct{ version, why string }
	type testCase struct {
		name     string
		kernels  []fakeKernel
		modprobe map[string]bool // [XZ and ZSTD: kmod 30 as Debian 12 builds it]
		want     string          // the version booted, "" for none
		passed   []passed        // the kernels passed over, newest first, and a word of why
	}
	cases := []testCase{
		{name: "the newest, its modules plain", kernels: []fakeKernel{old, {version: "6.1.0-9-amd64"}}, want: old.version},
		{name: "the newest, its modules gzip, which modprobe reads", kernels: []fakeKernel{old, {version: newest, suffix: ".gz"}},
			modprobe: map[string]bool{"ZLIB": true}, want: newest},
		{name: "two passed over", want: old.version,
			kernels: []fakeKernel{old, {version: newest, suffix: ".bz2"}, {version: "6.16.3+deb13-amd64", suffix: ".xz", without: "veth"}},
			passed:  []passed{{"6.16.3+deb13-amd64", "no module veth"}, {newest, "cannot decompress .bz2"}}},
		{name: "none can serve",
			kernels: []fakeKernel{{version: old.version, without: "wireguard"}, {version: newest, suffix: ".xz", damaged: "virtio_pci"}},
			passed:  []passed{{newest, "virtio_pci.ko.xz: decompress"}, {old.version, "no module wireguard"}}},
	}
	// The newest serves, its modules compressed.
	for _, suffix := range []string{".xz", ".zst"} {
		cases = append(cases, testCase{name: "the newest, its modules " + suffix, kernels: []fakeKernel{old, {version: newest, suffix: suffix}}, want: newest})
	}
	// The newest cannot serve: the old one is booted, and the newest named.
	for name, unfit := range map[string]struct {
		kernel fakeKernel
		why    string
	}{
		"gzip, which modprobe does not read": {fakeKernel{suffix: ".gz"}, "does not read .gz"},
		"no wireguard":                       {fakeKernel{suffix: ".xz", without: "wireguard"}, "no module wireguard"},
		"no 9p":                              {fakeKernel{without: "9p"}, "no module 9p"},
		"a damaged boot module":              {fakeKernel{suffix: ".zst", damaged: "9pnet"}, "9pnet.ko.zst: decompress"},
		"a compression the lane cannot read": {fakeKernel{suffix: ".bz2"}, "cannot decompress .bz2"},
		"no module tree":                     {fakeKernel{noTree: true}, "no modules installed"},
	} {
		unfit.kernel.version = newest
		cases = append(cases, testCase{name: name, kernels: []fakeKernel{old, unfit.kernel}, want: old.version,
			passed: []passed{{newest, unfit.why}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			boot, modules := t.TempDir(), t.TempDir()
			for _, k := range tc.kernels {
				k.install(t, boot, modules)
			}
			h := kernelHost{bootDir: boot, modulesRoot: modules, modprobe: tc.modprobe, modprobeSays: "kmod version 30 +ZSTD +XZ -ZLIB"}
			if h.modprobe == nil {
				h.modprobe = map[string]bool{"XZ": true, "ZSTD": true}
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
