package kernellane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/wireguard/wireguard.ko: kernel/lib/crypto/libcurve25519-generic.ko
`
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_ring.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := Kernel{Version: "test", Modules: dir}
	got, err := k.LoadOrder(bootModules...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = strings.TrimPrefix(got[i], dir+"/")
	}
	want := []string{
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", // virtio_ring is built in
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
		"kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/virtio/virtio_pci.ko",
		"kernel/net/9p/9pnet.ko",
		"kernel/net/9p/9pnet_virtio.ko",
		"kernel/fs/netfs/netfs.ko",
		"kernel/fs/fscache/fscache.ko",
		"kernel/fs/9p/9p.ko",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if _, err := k.LoadOrder("dummy"); err == nil {
		t.Error("LoadOrder of a missing module succeeded")
	}
}

func TestCompareVersions(t *testing.T) {
	if compareVersions("/boot/vmlinuz-6.1.0-57-amd64", "/boot/vmlinuz-6.1.0-9-amd64") <= 0 {
		t.Error("6.1.0-57 should sort after 6.1.0-9")
	}
	if compareVersions("/boot/vmlinuz-6.12.1", "/boot/vmlinuz-6.1.99") <= 0 {
		t.Error("6.12.1 should sort after 6.1.99")
	}
}
