package main

import (
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/ikto-mesh/ikto/pkg/fdstore"
	"github.com/ikto-mesh/ikto/pkg/wgdev"
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
