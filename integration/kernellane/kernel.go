package kernellane

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrMissing is wrapped by every error about something the machine lacks
// (qemu, a kernel with the wireguard module, busybox): with
// IKTO_REQUIRE_INTEGRATION=1 that fails the lane, otherwise it is skipped.
var ErrMissing = errors.New("kernel lane prerequisite missing")

// Kernel is a bootable kernel image and its modules.
type Kernel struct {
	Version string // uname -r
	Image   string // /boot/vmlinuz-VERSION
	Modules string // /lib/modules/VERSION
}

// bootModules are what the guest needs before it can mount its root: the
// virtio PCI transport and 9p over it. Their dependencies come from
// modules.dep. The initramfs carries them.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p"}

// guestModules are what the guest loads up front once it runs on the
// host's root (see prepareGuest), with the host's modprobe.
var guestModules = []string{"tun", "wireguard", "veth", "bridge"}

func kernelOf(image, modulesRoot string) Kernel {
	v := strings.TrimPrefix(filepath.Base(image), "vmlinuz-")
	return Kernel{Version: v, Image: image, Modules: filepath.Join(modulesRoot, v)}
}

// moduleEntry is one line of modules.dep: a module's path (relative to the
// modules directory) and its dependencies' names.
type moduleEntry struct {
	path string
	deps []string
}

func (k Kernel) modulesDep() (map[string]moduleEntry, error) {
	f, err := os.Open(filepath.Join(k.Modules, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]moduleEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		path, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		e := moduleEntry{path: path}
		for _, d := range strings.Fields(deps) {
			e.deps = append(e.deps, moduleName(d))
		}
		out[moduleName(path)] = e
	}
	return out, sc.Err()
}

func (k Kernel) builtin() map[string]bool {
	b, err := os.ReadFile(filepath.Join(k.Modules, "modules.builtin"))
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		out[moduleName(l)] = true
	}
	return out
}

// moduleName is what modprobe calls the module at path: its file name
// without .ko and any compression suffix, '-' read as '_'.
func moduleName(path string) string {
	n := filepath.Base(path)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

// LoadOrder returns the module files (absolute paths) to insmod, in an
// order where each comes after its dependencies, for the wanted modules;
// built-in ones are left out.
func (k Kernel) LoadOrder(wanted ...string) ([]string, error) {
	dep, err := k.modulesDep()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no modules installed for it: %w", err)
	}
	if err != nil {
		return nil, err
	}
	builtin := k.builtin()
	var order []string
	seen := map[string]bool{}
	var visit func(name string, from []string) error
	visit = func(name string, from []string) error {
		if seen[name] || builtin[name] {
			return nil
		}
		if slices.Contains(from, name) {
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(from, name), " → "))
		}
		e, ok := dep[name]
		if !ok {
			return fmt.Errorf("no module %s in %s", name, filepath.Join(k.Modules, "modules.dep"))
		}
		for _, d := range e.deps {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		seen[name] = true
		order = append(order, filepath.Join(k.Modules, e.path))
		return nil
	}
	for _, w := range wanted {
		if err := visit(moduleName(w), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// compareVersions orders kernel image names by their version numbers, so
// that 6.1.0-57 comes after 6.1.0-9.
func compareVersions(a, b string) int {
	fa, fb := versionFields(a), versionFields(b)
	for i := range min(len(fa), len(fb)) {
		if fa[i] != fb[i] {
			if fa[i] < fb[i] {
				return -1
			}
			return 1
		}
	}
	return len(fa) - len(fb)
}

func versionFields(s string) []int {
	var out []int
	n, in := 0, false
	for _, r := range s {
		if r >= '0' && r <= '9' {
			n, in = n*10+int(r-'0'), true
			continue
		}
		if in {
			out = append(out, n)
		}
		n, in = 0, false
	}
	if in {
		out = append(out, n)
	}
	return out
}
