package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListenModeStaleAndLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ikto.sock")

	// A socket file nobody answers on, as a crashed agent leaves it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file not left behind: %v", err)
	}

	l, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %04o, want 0600", st.Mode().Perm())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, l, Routes{"GET /v1/status": JSON(func() Status { return Status{Backend: "fake", Device: "wgx"} })})
	}()

	// A second agent on the same socket must be refused, naming it.
	if _, err := Listen(path, nil); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("Listen on a live socket = %v, want ErrSocketInUse", err)
	}

	c := NewClient(path)
	got, err := c.Status(context.Background())
	if err != nil || got.Backend != "fake" || got.Device != "wgx" {
		t.Fatalf("Status = %+v, %v", got, err)
	}
	if _, err := c.Get(context.Background(), "/nope"); err == nil {
		t.Fatal("GET of an unknown path succeeded")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file still there after shutdown: %v", err)
	}
}

func TestClientNamesTheSocketWhenNoAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := NewClient(path).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "ikto-agent running") {
		t.Fatalf("err = %v, want it to name %s and suggest the agent", err, path)
	}
}
