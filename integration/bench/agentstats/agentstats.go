// Package agentstats is what an agent process reports to the bench driver,
// and how a process's memory is read from /proc. It is separate from package
// bench so that ikto-bench-agent, whose memory is being measured, links
// nothing but the agent.
package agentstats

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stats is one agent's report once its device carries the first snapshot.
type Stats struct {
	// Sync is the time from agent.Run to the device carrying the snapshot.
	Sync  time.Duration `json:"sync_ns"`
	Peers int           `json:"peers"`
	// CPU is the process's CPU time (user and system) at that moment, from
	// its start: runtime, package init, connecting, device, sync.
	CPU time.Duration `json:"cpu_ns"`
	// HeapLive is the Go heap in use after a collection, once synced.
	HeapLive uint64 `json:"heap_live_bytes"`
	Memory
}

// Memory is a process's resident set, in bytes.
type Memory struct {
	RSS     uint64 `json:"rss_bytes"`      // VmRSS
	PeakRSS uint64 `json:"peak_rss_bytes"` // VmHWM
	// AnonRSS is the part that is the process's own (heap, stacks), not
	// pages of its executable; RSS counts both.
	AnonRSS uint64 `json:"anon_rss_bytes"` // RssAnon
}

// ReadMemory reads pid's resident set from /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	f, err := os.Open(path)
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var m Memory
	fields := map[string]*uint64{"VmRSS": &m.RSS, "VmHWM": &m.PeakRSS, "RssAnon": &m.AnonRSS}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %s %q: %w", path, name, value, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return Memory{}, fmt.Errorf("read %s: %w", path, err)
	}
	if m.PeakRSS == 0 {
		return Memory{}, fmt.Errorf("%s has no VmHWM", path)
	}
	return m, nil
}
