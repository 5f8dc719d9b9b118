package integration_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The chaos soak's knobs, all from the environment so that `make soak` and a
// replay of a failed run need no code change. Every default is the soakShort
// form `make test` runs.
const (
	envSoakDuration = "IKTO_SOAK"               // total chaos time, split between the NATS topologies without one of their own
	envSoakSeed     = "IKTO_SOAK_SEED"          // the fault sequence's seed; printed by every run
	envSoakNATS     = "IKTO_SOAK_NATS"          // topologies, comma-separated, each with an optional :DURATION of its own (soakTopologies)
	envSoakHosts    = "IKTO_SOAK_HOSTS"         // hosts at the start; the mesh grows to 2 more
	envSoakMax      = "IKTO_SOAK_MAX_FAULTS"    // a bound on faults per topology, whatever the time
	envSoakDevice   = "IKTO_SOAK_DEVICE_FAULTS" // 0: do not delete WireGuard devices under running agents
	envSoakPing     = "IKTO_SOAK_PING_BOUND"    // how soon after quiet every pair must answer a ping
	envSoakPingBoth = "IKTO_SOAK_PING_BOTH"     // 0: ping one end of each pair first (see pingMatrix)
	envSoakSkip     = "IKTO_SOAK_SKIP"          // fault kinds to leave out, comma-separated (e.g. forged)
)

// soakSettings is one run's configuration.
type soakSettings struct {
	seed         uint64
	topologies   []soakTopology
	hosts        int
	maxFaults    int
	deviceFaults bool
	pingBound    time.Duration
	pingBoth     bool
	skip         map[string]bool // fault kinds left out
	// gap bounds the pause between two faults: about 1.5 faults a second,
	// enough to overlap recoveries, few enough for two shared cores.
	minGap, maxGap time.Duration
}

// Topologies of the NATS control plane.
const (
	soakSingle  = "single"  // one embedded server
	soakCluster = "cluster" // three embedded servers, an R3 bucket
	soakDebian  = "debian"  // one Debian nats-server (serverDebian), the oldest supported
)

// soakTopology is one control plane the soak runs on, and its chaos time.
type soakTopology struct {
	name  string
	chaos time.Duration
}

// soakDefault is the chaos time in all when IKTO_SOAK is not set: 60 s,
// 30 s per topology of the default two, so the test stays within about two
// and a half minutes of wall time.
const soakDefault = 60 * time.Second

func soakSettingsFromEnv(t *testing.T) soakSettings {
	t.Helper()
	s := soakSettings{
		seed:  uint64(time.Now().UnixNano()),
		hosts: 6, maxFaults: 5000, pingBound: 2 * time.Second,
		minGap: 200 * time.Millisecond, maxGap: 1100 * time.Millisecond,
	}
	total := soakDefault
	if v := os.Getenv(envSoakDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 10m", envSoakDuration, v)
		}
		total = d
	}
	if v := os.Getenv(envSoakSeed); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSoakSeed, v, err)
		}
		s.seed = seed
	}
	topos, err := soakTopologies(os.Getenv(envSoakNATS), total)
	if err != nil {
		t.Fatalf("%s: %v", envSoakNATS, err)
	}
	s.topologies = topos
	s.hosts = soakEnvInt(t, envSoakHosts, s.hosts, 4, 20)
	s.maxFaults = soakEnvInt(t, envSoakMax, s.maxFaults, 1, 1_000_000)
	// The agent recreates a deleted device since 9e524fd; 0 leaves the
	// fault out, for an agent from before.
	s.deviceFaults = os.Getenv(envSoakDevice) != "0"
	s.pingBoth = os.Getenv(envSoakPingBoth) != "0"
	s.skip = map[string]bool{}
	if v := os.Getenv(envSoakSkip); v != "" {
		known := map[string]bool{}
		for _, f := range soakFaults(true) {
			known[f.kind] = true
		}
		for _, k := range strings.Split(v, ",") {
			if !known[k] {
				t.Fatalf("%s=%q: no fault kind %q", envSoakSkip, v, k)
			}
			s.skip[k] = true
		}
	}
	if v := os.Getenv(envSoakPing); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", envSoakPing, v)
		}
		s.pingBound = d
	}
	return s
}

func soakEnvInt(t *testing.T, name string, def, lo, hi int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		t.Fatalf("%s=%q: want an integer in [%d, %d]", name, v, lo, hi)
	}
	return n
}

// soakTopologies reads IKTO_SOAK_NATS: topologies (single, cluster,
// debian) separated by commas, each with an optional :DURATION, its own
// chaos time; the others share total. Empty or "both" is single and
// cluster.
func soakTopologies(v string, total time.Duration) ([]soakTopology, error) {
	if v == "" || v == "both" {
		v = soakSingle + "," + soakCluster
	}
	var out []soakTopology
	shared := 0
	seen := map[string]bool{}
	for _, item := range strings.Split(v, ",") {
		name, own, timed := strings.Cut(strings.TrimSpace(item), ":")
		switch name {
		case soakSingle, soakCluster, soakDebian:
		default:
			return nil, fmt.Errorf("%q: no topology %q; want both, or single, cluster and debian separated by commas, each with an optional :DURATION", v, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%q: %s twice", v, name)
		}
		seen[name] = true
		topo := soakTopology{name: name}
		if timed {
			d, err := time.ParseDuration(own)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%q: %s's chaos time %q: want a positive duration such as 30s", v, name, own)
			}
			topo.chaos = d
		} else {
			shared++
		}
		out = append(out, topo)
	}
	for i := range out {
		if out[i].chaos == 0 {
			out[i].chaos = total / time.Duration(shared)
		}
	}
	return out, nil
}

// replay is the command line that runs the same fault sequence again.
func (s soakSettings) replay() string {
	var total time.Duration
	var topos []string
	for _, topo := range s.topologies {
		total += topo.chaos
		topos = append(topos, topo.String())
	}
	line := fmt.Sprintf("%s=%s %s=%d %s=%s %s=%d %s=%d", envSoakDuration, total,
		envSoakSeed, s.seed, envSoakNATS, strings.Join(topos, ","), envSoakHosts, s.hosts, envSoakMax, s.maxFaults)
	if !s.deviceFaults {
		line += " " + envSoakDevice + "=0"
	}
	if !s.pingBoth {
		line += " " + envSoakPingBoth + "=0"
	}
	if len(s.skip) > 0 {
		line += " " + envSoakSkip + "=" + strings.Join(soakSortedKeys(s.skip), ",")
	}
	return line
}

// String is the topology as IKTO_SOAK_NATS names it, with its chaos time.
func (t soakTopology) String() string { return t.name + ":" + t.chaos.String() }

// topologySeed keeps each topology's sequence the same whether it runs alone
// or after another. Debian's server replays the single server's sequence:
// a fault one server heals and the other does not points at the server.
func (s soakSettings) topologySeed(topo string) uint64 {
	if topo == soakCluster {
		return s.seed ^ 0x9e3779b97f4a7c15
	}
	return s.seed
}
