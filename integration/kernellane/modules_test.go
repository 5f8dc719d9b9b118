package kernellane

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeModule is an object the size of a small module that starts as every
// module does; the name makes each one's bytes differ.
func fakeModule(name string) []byte {
	var b bytes.Buffer
	b.Write(elfMagic)
	for i := range 4000 {
		fmt.Fprintf(&b, "%s symbol %d\n", name, i)
	}
	return b.Bytes()
}

// compressed compresses data the way suffix says, with the libraries the
// lane reads it with; an unknown suffix leaves data as it is.
func compressed(t *testing.T, suffix string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch suffix {
	case ".xz":
		var w *xz.Writer
		if w, err = xz.NewWriter(&buf); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	case ".zst":
		var w *zstd.Encoder
		if w, err = zstd.NewWriter(&buf); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	case ".gz":
		w := gzip.NewWriter(&buf)
		if _, err = w.Write(data); err == nil {
			err = w.Close()
		}
	default:
		return data
	}
	if err != nil {
		t.Fatalf("compress %s: %v", suffix, err)
	}
	return buf.Bytes()
}

func TestReadModule(t *testing.T) {
	mod := fakeModule("wireguard")
	xzData := compressed(t, ".xz", mod)
	for _, tc := range []struct {
		name    string
		file    string
		data    []byte
		wantErr string // "" when it reads back mod
	}{
		{"plain", "wireguard.ko", mod, ""},
		{"xz", "wireguard.ko.xz", xzData, ""},
		{"zstd", "wireguard.ko.zst", compressed(t, ".zst", mod), ""},
		{"gzip", "wireguard.ko.gz", compressed(t, ".gz", mod), ""},
		{"truncated xz", "wireguard.ko.xz", xzData[:len(xzData)/2], "wireguard.ko.xz: decompress"},
		{"not zstd at all", "wireguard.ko.zst", mod, "wireguard.ko.zst: decompress"},
		{"xz named zstd", "wireguard.ko.zst", xzData, "wireguard.ko.zst: decompress"},
		{"an unknown compression", "wireguard.ko.bz2", mod, "cannot decompress .bz2"},
		{"not an object", "wireguard.ko", []byte("#!/bin/sh\n"), "wireguard.ko is not an ELF object"},
		{"not an object once decompressed", "wireguard.ko.gz", compressed(t, ".gz", []byte("text")), "wireguard.ko.gz is not an ELF object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readModule(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readModule = %v; want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, mod) {
				t.Errorf("readModule gave %d bytes, not the %d put in", len(got), len(mod))
			}
		})
	}
	if _, err := readModule(filepath.Join(t.TempDir(), "9p.ko.xz")); err == nil || !strings.Contains(err.Error(), "9p.ko.xz") {
		t.Errorf("readModule of a missing file = %v; want an error naming it", err)
	}
}

func TestModuleNames(t *testing.T) {
	for path, want := range map[string][3]string{ // suffix, plain name, modprobe's name
		"kernel/net/9p/9pnet_virtio.ko":           {"", "9pnet_virtio.ko", "9pnet_virtio"},
		"kernel/net/9p/9pnet_virtio.ko.xz":        {".xz", "9pnet_virtio.ko", "9pnet_virtio"},
		"kernel/lib/libcurve25519-generic.ko.zst": {".zst", "libcurve25519-generic.ko", "libcurve25519_generic"},
	} {
		got := [3]string{moduleSuffix(path), plainName(path), moduleName(path)}
		if got != want {
			t.Errorf("%s: suffix, plain name, name = %q; want %q", path, got, want)
		}
	}
}
