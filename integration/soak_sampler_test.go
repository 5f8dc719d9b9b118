package integration_test

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// soakSampleEvery is how often the sampler reads every running device during the
// chaos. A read is one UAPI round trip; eight of them four times a second
// are a few percent of a core. Changes shorter than this can slip between
// two samples: the log audit below sees every one the agents made.
const soakSampleEvery = 250 * time.Millisecond

// runSoakSampler reads every target device until ctx ends, checking each read
// against the model. Read errors are not violations: a device goes with its
// agent, and comes back with the next.
func runSoakSampler(ctx context.Context, m *soakModel) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(soakSampleEvery)
		defer tick.Stop()
		for {
			for _, t := range m.sampleTargets() {
				if dev, err := t.host.Device(); err == nil {
					m.checkDevice(t, dev.Peers)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// The agents log every peer they put on or change on their device (a pass
// with more than eight changes logs only a summary: the initial sync, or a
// re-created bucket's snapshot).
var (
	soakPeerApplied = regexp.MustCompile(`msg="peer (added|updated)"`)
	soakPeerRemoved = regexp.MustCompile(`msg="peer removed"`)
	soakLogField    = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)
)

// soakAuditLog checks every peer an agent applied, as its log tells it: never a
// record the soak wrote as an attacker, except intruders (counted); a soak
// host only with a prefix it claimed; and never an evicted host again once
// the agent had removed it after its eviction (an evicted agent never runs
// again, so only stale state could bring it back). It returns the number
// of applications it read, the intruder ones, and the unnamed ones it
// could not judge.
func soakAuditLog(m *soakModel, host, path string) (applied, intruders, unnamed int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	dropped := map[string]bool{} // evicted hosts this agent removed after their eviction
	for sc.Scan() {
		line := sc.Text()
		removed := soakPeerRemoved.MatchString(line)
		if !removed && !soakPeerApplied.MatchString(line) {
			continue
		}
		fields := soakLogFields(line)
		name, at := fields["peer"], fields["time"]
		when, _ := time.Parse(time.RFC3339Nano, at)
		evicted, wasEvicted := m.evictedAt(name)
		if removed {
			// ikto-admin writes the revocation before it returns: an agent
			// may drop the peer a moment before evictedAt.
			dropped[name] = dropped[name] || wasEvicted && when.After(evicted.Add(-time.Second))
			continue
		}
		applied++
		if name == "" {
			// A peer re-added with its device (after an ip link del) while
			// its record is gone from the bucket has no record to name it in
			// the log; the sampler judges it on the device.
			unnamed++
			continue
		}
		switch {
		case wasEvicted && dropped[name] && when.After(evicted):
			m.violate("agent on %s applied the evicted %s again after it had removed it (%s at %s, log %s)",
				host, name, fields["prefix"], at, path)
		case wasEvicted && when.After(evicted.Add(soakRevokeGrace)):
			m.violate("agent on %s applied %s %s after its eviction (%s at %s, log %s)",
				host, name, when.Sub(evicted).Round(time.Millisecond), fields["prefix"], at, path)
		}
		switch {
		case strings.HasPrefix(name, soakIntruderName):
			intruders++
		case strings.HasPrefix(name, soakGarbageName), strings.HasPrefix(name, soakForgedName):
			m.violate("agent on %s applied the hostile record %s (%s at %s, log %s)", host, name, fields["prefix"], at, path)
		default:
			p, perr := netip.ParsePrefix(fields["prefix"])
			known, ok := m.legitPrefix(name, p)
			if perr != nil || !known || !ok {
				m.violate("agent on %s applied peer %q with prefix %s, which it never claimed (at %s, log %s)", host, name, fields["prefix"], at, path)
			}
		}
	}
	return applied, intruders, unnamed, sc.Err()
}

// soakLogFields is a log line's key=value pairs, values unquoted.
func soakLogFields(line string) map[string]string {
	fields := map[string]string{}
	for _, m := range soakLogField.FindAllStringSubmatch(line, -1) {
		v := m[2]
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		fields[m[1]] = v
	}
	return fields
}
