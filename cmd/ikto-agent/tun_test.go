package main

import (
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/pkg/fdstore"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
	"github.com/ikto-mesh/ikto/pkg/wgdev/fake"
)

// A device whose agent will not come back (evicted, prefix held by another
// key) must go with it: the keeper takes its TUN out of the service
// manager's store.
func TestTUNKeeperDropsTheTUNOfADeviceThatGoes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer manager.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	newTUNKeeper(fdstore.FromEnv(), wgdev.KindUserspace, "ik0", slog.New(slog.DiscardHandler)).drop()

	buf := make([]byte, 512)
	if err := manager.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := manager.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if got := string(buf[:n]); got != "FDSTOREREMOVE=1\nFDNAME=tun-ik0" {
		t.Errorf("drop sent %q", got)
	}
}

// managerSocket plays systemd's notification socket for the keeper.
func managerSocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	manager, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { manager.Close() })
	return manager, path
}

// nextNotification is the next message the keeper sent, "" after a second
// of silence.
func nextNotification(t *testing.T, manager *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 512)
	if err := manager.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := manager.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// wg_dev_name changed and the unit restarted (a restart keeps the store):
// the TUN stored under the old name is no device's any more, and the
// keeper gives it back, so that its link, address and route go. The
// service's side runs in a child of this test binary, which is passed the
// descriptor as systemd would pass it.
func TestTUNKeeperReleasesWhatIsStoredForAnotherDevice(t *testing.T) {
	if os.Getenv("IKTO_TUN_SERVICE") == "1" {
		k := newTUNKeeper(fdstore.FromEnv(), wgdev.KindUserspace, "wg-new", slog.New(slog.DiscardHandler))
		if k.left != nil {
			t.Error("the keeper for wg-new took what was stored for wg-old")
		}
		return
	}
	manager, path := managerSocket(t)
	r, w, err := os.Pipe() // stands for the old device's TUN
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "-test.run=^TestTUNKeeperReleasesWhatIsStoredForAnotherDevice$")
	cmd.Env = append(os.Environ(), "IKTO_TUN_SERVICE=1", "NOTIFY_SOCKET="+path, "LISTEN_FDS=1", "LISTEN_FDNAMES=tun-wg-old")
	cmd.ExtraFiles = []*os.File{r}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the service's side: %v\n%s", err, out)
	}
	if got := nextNotification(t, manager); got != "FDSTOREREMOVE=1\nFDNAME=tun-wg-old" {
		t.Errorf("keeper for wg-new, store holding tun-wg-old: sent %q; want tun-wg-old removed", got)
	}
}

// A TUN left that the device opened does not run on (a kernel or external
// device was opened in its place) leaves the store with it: nothing keeps a
// TUN no device uses.
func TestTUNKeeperKeepsNothingForADeviceWithoutATUN(t *testing.T) {
	manager, path := managerSocket(t)
	t.Setenv("NOTIFY_SOCKET", path)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	k := newTUNKeeper(fdstore.FromEnv(), wgdev.KindAuto, "ik0", slog.New(slog.DiscardHandler))
	k.left = r
	cfg := wgdev.Config{Name: "ik0"}
	if _, err := k.open(cfg, func(c wgdev.Config) (wgdev.Device, error) {
		c.TUN.Close() // as backend.Open does with a TUN it does not run on
		return fake.New(c), nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := nextNotification(t, manager); got != "FDSTOREREMOVE=1\nFDNAME=tun-ik0" {
		t.Errorf("a device without a TUN opened in place of the TUN left: sent %q; want tun-ik0 removed", got)
	}
}
