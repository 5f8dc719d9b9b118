package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultSocket is where the agent listens unless told otherwise: a
// directory only root may create, unlike /tmp (ikto 0.3.0's default, still
// accepted with -s), where any local user could take the name first.
const DefaultSocket = "/run/ikto/ikto.sock"

// ErrSocketInUse is returned by Listen when another process answers on the socket.
var ErrSocketInUse = errors.New("socket in use by a running agent")

// Listen binds the unix socket at path: root's alone (mode 0600), or, with a
// group, readable by its members too (the group's, mode 0660). A socket file
// left by a crashed agent (nobody answers) is replaced; one that answers is
// not. A missing parent directory is created with mode 0750, the group's
// when there is one.
func Listen(path string, group *user.Group) (net.Listener, error) {
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("admin socket %s: %w", path, err)
			}
			if group != nil {
				gid, _ := strconv.Atoi(group.Gid)
				if err := os.Chown(dir, -1, gid); err != nil {
					return nil, fmt.Errorf("admin socket %s: give its directory to group %s: %w", path, group.Name, err)
				}
			}
		}
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: %w; stop that agent or pass another -s", path, ErrSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := grant(path, group); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return l, nil
}

// Routes maps "GET /path" to handlers; it is the whole API surface.
type Routes map[string]http.Handler

// Serve answers requests on l until ctx is done, then shuts down and removes
// the socket file. Every route must be a GET: the socket may be open to a
// group (DefaultGroup), which may read and nothing more.
func Serve(ctx context.Context, l net.Listener, routes Routes) error {
	mux := http.NewServeMux()
	for pattern, h := range routes {
		if !strings.HasPrefix(pattern, http.MethodGet+" ") {
			return fmt.Errorf("admin socket: route %q: the socket serves reads only (GET), to root and its group alike", pattern)
		}
		mux.Handle(pattern, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin socket: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	if a, ok := l.Addr().(*net.UnixAddr); ok {
		os.Remove(a.Name)
	}
	return err
}

// JSON is a handler that serves what f returns as indented JSON.
func JSON[T any](f func() T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f())
	})
}
