package kernellane

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// kernelHost is where the lane looks for kernels, and what the guest's
// modprobe reads: the guest runs the host's own kmod, over the 9p root.
type kernelHost struct {
	bootDir     string // the kernel images, vmlinuz-VERSION
	modulesRoot string // their module trees, VERSION/modules.dep
	// modprobe holds the module compressions, by kmod's names (XZ, ZSTD,
	// ZLIB), the host's /sbin/modprobe reads; modprobeSays is what it said
	// when asked (or why it could not be), for the message.
	modprobe     map[string]bool
	modprobeSays string
}

// hostKernels is this machine's kernelHost; empty directories take the
// defaults, /boot and /lib/modules.
func hostKernels(bootDir, modulesRoot string) kernelHost {
	h := kernelHost{bootDir: cmp.Or(bootDir, "/boot"), modulesRoot: cmp.Or(modulesRoot, "/lib/modules"), modprobe: map[string]bool{}}
	// kmod lists its features on its version's second line:
	// "+ZSTD +XZ -ZLIB +LIBCRYPTO -EXPERIMENTAL".
	out, err := exec.Command("/sbin/modprobe", "--version").Output()
	if err != nil {
		h.modprobeSays = fmt.Sprintf("/sbin/modprobe --version: %v; apt-get install kmod", err)
		return h
	}
	h.modprobeSays = strings.Join(strings.Fields(string(out)), " ")
	for _, f := range strings.Fields(string(out)) {
		if name, ok := strings.CutPrefix(f, "+"); ok {
			h.modprobe[name] = true
		}
	}
	return h
}

// Unfit is a kernel the lane did not boot, and why.
type Unfit struct {
	Kernel Kernel
	Why    error
}

func (u Unfit) String() string { return fmt.Sprintf("kernel %s: %v", u.Kernel.Version, u.Why) }

// chooseKernel returns the kernel to boot: image when given, if it can
// serve; else the newest vmlinuz-* in the boot directory that can, with
// the newer ones it passed over. When none can, the error names each and
// why.
func (h kernelHost) chooseKernel(image string) (Kernel, []Unfit, error) {
	if image != "" {
		k := kernelOf(image, h.modulesRoot)
		if err := h.canServe(k); err != nil {
			return Kernel{}, nil, fmt.Errorf("%w: kernel %s cannot serve the lane: %w", ErrMissing, image, err)
		}
		return k, nil, nil
	}
	images, _ := filepath.Glob(filepath.Join(h.bootDir, "vmlinuz-*"))
	if len(images) == 0 {
		return Kernel{}, nil, fmt.Errorf("%w: no kernel in %s (apt-get install linux-image-amd64)", ErrMissing, h.bootDir)
	}
	slices.SortFunc(images, func(a, b string) int { return compareVersions(filepath.Base(b), filepath.Base(a)) })
	var passed []Unfit
	for _, img := range images {
		k := kernelOf(img, h.modulesRoot)
		err := h.canServe(k)
		if err == nil {
			return k, passed, nil
		}
		passed = append(passed, Unfit{Kernel: k, Why: err})
	}
	var each strings.Builder
	for _, u := range passed {
		fmt.Fprintf(&each, "\n  %s", u)
	}
	return Kernel{}, passed, fmt.Errorf("%w: no kernel in %s can serve the lane (apt-get install linux-image-amd64 installs one that can):%s",
		ErrMissing, h.bootDir, each.String())
}

// canServe says why the kernel cannot serve the lane, or nil. The modules
// the initramfs carries must be there and decompress here; the ones the
// guest loads later must be there (or built in) and compressed, if at all,
// in a way the host's modprobe reads.
func (h kernelHost) canServe(k Kernel) error {
	if _, err := os.Stat(k.Image); err != nil {
		return err
	}
	if _, err := k.initramfsModules(); err != nil {
		return err
	}
	paths, err := k.LoadOrder(guestModules...)
	if err != nil {
		return err
	}
	for _, p := range paths {
		c, compressed, err := compressionOf(p)
		if err != nil {
			return err
		}
		if compressed && !h.modprobe[c.kmod] {
			return fmt.Errorf("the guest loads %s with this host's /sbin/modprobe, which does not read %s (%s)",
				filepath.Base(p), c.suffix, h.modprobeSays)
		}
	}
	return nil
}
