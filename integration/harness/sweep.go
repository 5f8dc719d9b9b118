package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// stateDir holds one file per live network listing what it made, so that a
// run killed before Close (go test's timeout panic, SIGKILL) is cleaned up by
// the next run instead of leaking namespaces and links.
const stateDir = "/run/ikto-harness"

type stateData struct {
	Owner      stateProcess   `json:"owner"`
	Namespaces []string       `json:"namespaces,omitempty"`
	Links      []string       `json:"links,omitempty"`
	Devices    []string       `json:"devices,omitempty"`
	Processes  []stateProcess `json:"processes,omitempty"`
}

// stateProcess names a process by PID and start time, so that a recycled PID
// is never mistaken for it.
type stateProcess struct {
	PID   int    `json:"pid"`
	Start string `json:"start"`
}

type stateFile struct {
	path string
	mu   sync.Mutex
	data stateData
}

func newStateFile(suffix string) (*stateFile, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", stateDir, err)
	}
	pid := os.Getpid()
	s := &stateFile{
		path: filepath.Join(stateDir, suffix+".json"),
		data: stateData{Owner: stateProcess{PID: pid, Start: processStart(pid)}},
	}
	if err := s.write(); err != nil {
		return nil, err
	}
	return s, nil
}

// update changes the recorded state and writes it out. A failed write only
// weakens the crash sweep, so it is logged, not returned.
func (s *stateFile) update(change func(*stateData)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.data)
	if err := s.write(); err != nil {
		slog.Warn("harness state not saved", "err", err)
	}
}

func (s *stateFile) write() error {
	b, err := json.Marshal(s.data)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write state %s: %w", s.path, err)
	}
	return nil
}

func (s *stateFile) remove() {
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		slog.Warn("harness state not removed", "file", s.path, "err", err)
	}
}

// processStart is field 22 of /proc/PID/stat (start time in clock ticks since
// boot), or "" when the process does not exist.
func processStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after it start past ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func (p stateProcess) alive() bool {
	return p.PID > 0 && p.Start != "" && processStart(p.PID) == p.Start
}

// sweepStale removes what networks of dead runs left behind. Only names that
// such a run recorded are touched, and only processes whose PID and start
// time both match are killed.
func sweepStale() {
	files, err := filepath.Glob(filepath.Join(stateDir, "*.json"))
	if err != nil {
		return
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var d stateData
		if err := json.Unmarshal(b, &d); err != nil {
			slog.Warn("unreadable harness state; remove it by hand", "file", f, "err", err)
			continue
		}
		if d.Owner.alive() {
			continue
		}
		slog.Info("sweeping a dead run's network", "file", f, "owner", d.Owner.PID)
		for _, p := range d.Processes {
			if p.alive() {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
		for _, ns := range d.Namespaces {
			if netnsExists(ns) {
				_, _ = ip("netns", "del", ns)
			}
		}
		for _, l := range d.Links {
			if linkExists(l) {
				_, _ = ip("link", "del", l)
			}
		}
		for _, dev := range d.Devices {
			_ = os.Remove(uapiSocket(dev))
		}
		_ = os.Remove(f)
	}
}

// uapiSocket is where wireguard-go puts a device's control socket; it is in
// the shared filesystem, so it is reachable from the root namespace.
func uapiSocket(dev string) string { return filepath.Join("/var/run/wireguard", dev+".sock") }
