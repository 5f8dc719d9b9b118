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

// notifications listens as the service manager's notification socket and
// returns what arrives on it.
func notifications(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	out := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
		return ""
	}
}

// A device whose agent will not come back (evicted, prefix held by another
// key) must go with it: the keeper takes its TUN out of the store.
func TestTUNKeeperDropsTheTUNOfADeviceThatGoes(t *testing.T) {
	msgs := notifications(t)
	k := newTUNKeeper(fdstore.FromEnv(), wgdev.KindUserspace, "ik0", slog.New(slog.DiscardHandler))
	k.drop()
	if got := next(t, msgs); got != "FDSTOREREMOVE=1\nFDNAME=tun-ik0" {
		t.Errorf("drop sent %q", got)
	}
}
