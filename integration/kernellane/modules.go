package kernellane

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// A distribution may ship its modules compressed (Debian's 6.12 does, with
// xz). The initramfs's busybox insmod is given them plain, decompressed
// here on the way in; the modules the guest loads later come from the
// host's root through the host's own kmod (/sbin/modprobe), which must read
// their compression itself.

// compression is one way the kernel's build may compress modules: the
// suffix after ".ko", kmod's name for it (as `kmod --version` lists its
// features) and a reader for it. Go libraries rather than the host's xz
// and zstd tools: the lane runs no other helper on the host but qemu, and
// a missing tool would be one more prerequisite to explain.
type compression struct {
	suffix string
	kmod   string
	open   func(io.Reader) (io.ReadCloser, error)
}

// compressions are the kernel's choices (CONFIG_MODULE_COMPRESS_*).
var compressions = []compression{
	{".xz", "XZ", func(r io.Reader) (io.ReadCloser, error) {
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(xr), nil
	}},
	{".zst", "ZSTD", func(r io.Reader) (io.ReadCloser, error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}},
	{".gz", "ZLIB", func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }},
}

// moduleSuffix is what follows ".ko" in a module's file name: "" for a
// plain module, ".xz" for a compressed one.
func moduleSuffix(path string) string {
	n := filepath.Base(path)
	if i := strings.Index(n, ".ko"); i >= 0 {
		return n[i+len(".ko"):]
	}
	return n
}

// plainName is the module's file name without its compression suffix.
func plainName(path string) string {
	n := filepath.Base(path)
	return strings.TrimSuffix(n, moduleSuffix(n))
}

// compressionOf returns how a module with the given suffix is compressed;
// ok is false for a plain module, err set for a suffix the lane cannot read.
func compressionOf(path string) (c compression, ok bool, err error) {
	s := moduleSuffix(path)
	if s == "" {
		return compression{}, false, nil
	}
	i := slices.IndexFunc(compressions, func(c compression) bool { return c.suffix == s })
	if i < 0 {
		return compression{}, false, fmt.Errorf("module %s: the lane cannot decompress %s (it reads .ko, .ko.xz, .ko.zst and .ko.gz)", filepath.Base(path), s)
	}
	return compressions[i], true, nil
}

// elfMagic starts every loadable module: a file that decompresses into
// something else is not one.
var elfMagic = []byte("\x7fELF")

// readModule returns the module at path as the kernel's init_module takes
// it: decompressed when its name says it is compressed.
func readModule(path string) ([]byte, error) {
	c, compressed, err := compressionOf(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	var r io.Reader = f
	if compressed {
		rc, err := c.open(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: decompress: %w (a damaged file? reinstall its kernel package)", filepath.Base(path), err)
		}
		defer rc.Close()
		r = rc
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("module %s: decompress: %w (a damaged file? reinstall its kernel package)", filepath.Base(path), err)
	}
	if !bytes.HasPrefix(b, elfMagic) {
		return nil, fmt.Errorf("module %s is not an ELF object (a damaged file? reinstall its kernel package)", filepath.Base(path))
	}
	return b, nil
}

// moduleFile is a module as the initramfs carries it: plain, under its
// plain name.
type moduleFile struct {
	name string
	data []byte
}

// initramfsModules reads the modules the initramfs loads before it can
// mount the root (bootModules and their dependencies, in load order),
// decompressed.
func (k Kernel) initramfsModules() ([]moduleFile, error) {
	paths, err := k.LoadOrder(bootModules...)
	if err != nil {
		return nil, err
	}
	var out []moduleFile
	for _, p := range paths {
		b, err := readModule(p)
		if err != nil {
			return nil, err
		}
		out = append(out, moduleFile{name: plainName(p), data: b})
	}
	return out, nil
}

// modulesNote is what the lane's report says of the initramfs's modules
// when they came compressed.
func (k Kernel) modulesNote() string {
	paths, _ := k.LoadOrder(bootModules...)
	for _, p := range paths {
		if s := moduleSuffix(p); s != "" {
			return fmt.Sprintf("; its .ko%s modules decompressed into the initramfs", s)
		}
	}
	return ""
}
