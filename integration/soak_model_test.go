package integration_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/integration/harness"
)

// soakModel is what the soak knows to be legitimate, shared between the
// fault loop (which writes it before every change it makes) and the sampler
// (which checks every device against it while the chaos runs). A peer on a
// device is legitimate only if it is one of the soak's hosts with a prefix
// that host itself claimed; everything the soak wrote as an attacker is
// registered here before it reaches the bucket.
type soakModel struct {
	mu    sync.Mutex
	start time.Time
	// legit maps each host's public key to every prefix its agent claimed
	// (a re-addressed host keeps the old one until it released it).
	legit map[wgtypes.Key]map[netip.Prefix]bool
	names map[string]wgtypes.Key // host name → key, for the log audit
	// garbage are the fresh keys of records that break a rule: never to be
	// applied anywhere.
	garbage map[wgtypes.Key]bool
	// intruders are the fresh keys of valid records written over a live
	// host's claim, with that host's prefix. Other agents accept such a
	// record until its victim restores its own (that is the design: a
	// valid record is a valid record), so a soakSighting is counted, not failed.
	intruders map[wgtypes.Key]netip.Prefix
	// revoked are evicted keys whose revocation is in the bucket, from when
	// their eviction completed; evicted are all of them, for good.
	revoked, evicted map[wgtypes.Key]time.Time
	// targets are the devices to sample: running agents' hosts.
	targets map[string]soakTarget

	violations map[string]*soakViolation
	order      []string
	sightings  map[wgtypes.Key]*soakSighting
	samples    int
	peersSeen  int
	// evictedSeen is the longest a device listed a key after its eviction.
	evictedSeen time.Duration
}

// soakTarget is one device the sampler reads.
type soakTarget struct {
	host   *harness.Host
	prefix netip.Prefix // the host's own prefix: no peer may route it
}

// soakViolation is one broken invariant, counted each time it is seen again.
type soakViolation struct {
	first time.Duration
	count int
}

// soakSighting is one intruder key seen on devices.
type soakSighting struct {
	first, last time.Duration
	samples     int
}

// soakRevokeGrace is how long after `ikto-admin evict` returns a device may
// still list the evicted key: the revocation travels through the watch, and
// an agent that has just reconnected to a cluster whose member stopped
// re-reads the bucket for up to 7 s (measured by the soak). A peer kept
// longer is kept by a decision, not by the delay.
const soakRevokeGrace = 10 * time.Second

func newSoakModel(start time.Time) *soakModel {
	return &soakModel{
		start: start, legit: map[wgtypes.Key]map[netip.Prefix]bool{}, names: map[string]wgtypes.Key{},
		garbage: map[wgtypes.Key]bool{}, intruders: map[wgtypes.Key]netip.Prefix{},
		revoked: map[wgtypes.Key]time.Time{}, evicted: map[wgtypes.Key]time.Time{}, targets: map[string]soakTarget{},
		violations: map[string]*soakViolation{}, sightings: map[wgtypes.Key]*soakSighting{},
	}
}

func (m *soakModel) since() time.Duration { return time.Since(m.start) }

// claim records that host name (key) claims prefix, before its agent starts.
func (m *soakModel) claim(name string, key wgtypes.Key, prefix netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.legit[key] == nil {
		m.legit[key] = map[netip.Prefix]bool{}
	}
	m.legit[key][prefix] = true
	m.names[name] = key
}

func (m *soakModel) addGarbage(k wgtypes.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.garbage[k] = true
}

func (m *soakModel) addIntruder(k wgtypes.Key, victim netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.intruders[k] = victim
}

func (m *soakModel) revoke(k wgtypes.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[k] = time.Now()
	m.evicted[k] = m.revoked[k]
}

// unrevoke forgets the revocations: a deleted bucket takes its revoked.*
// records with it.
func (m *soakModel) unrevoke() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.revoked)
}

// target starts sampling a host's device, whose own prefix is prefix.
func (m *soakModel) target(h *harness.Host, prefix netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.targets[h.Name] = soakTarget{host: h, prefix: prefix}
}

// untarget stops sampling a host's device: its agent is gone.
func (m *soakModel) untarget(h *harness.Host) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.targets, h.Name)
}

func (m *soakModel) sampleTargets() []soakTarget {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []soakTarget
	for _, t := range m.targets {
		out = append(out, t)
	}
	return out
}

// violate records a broken invariant. Repeats of one message are counted,
// not listed again.
func (m *soakModel) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.violations[msg]; ok {
		v.count++
		return
	}
	m.violations[msg] = &soakViolation{first: m.since(), count: 1}
	m.order = append(m.order, msg)
}

// failures lists the violations in the order they were first seen.
func (m *soakModel) failures() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, msg := range m.order {
		v := m.violations[msg]
		out = append(out, fmt.Sprintf("[+%s, seen %d×] %s", v.first.Round(time.Millisecond), v.count, msg))
	}
	return out
}

// checkDevice judges one read of a device: invariant 1 (no prefix routed to
// two keys, none routing the host's own prefix) and invariant 4 (only the
// soak's hosts with prefixes they claimed; intruders counted).
func (m *soakModel) checkDevice(t soakTarget, peers []wgtypes.Peer) {
	m.mu.Lock()
	m.samples++
	m.peersSeen += len(peers)
	type route struct {
		prefix netip.Prefix
		key    wgtypes.Key
	}
	var routes []route
	var problems []string
	now := time.Now()
	for _, p := range peers {
		for _, n := range p.AllowedIPs {
			a, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			routes = append(routes, route{netip.PrefixFrom(a.Unmap(), ones).Masked(), p.PublicKey})
		}
		problems = append(problems, m.judgePeer(p, now)...)
	}
	for i, a := range routes {
		if a.prefix.Overlaps(t.prefix) {
			problems = append(problems, fmt.Sprintf("peer %s routes %s, inside the host's own %s", soakShort(a.key), a.prefix, t.prefix))
		}
		for _, b := range routes[i+1:] {
			if a.key != b.key && a.prefix.Overlaps(b.prefix) {
				problems = append(problems, fmt.Sprintf("%s (%s) and %s (%s) overlap", a.prefix, soakShort(a.key), b.prefix, soakShort(b.key)))
			}
		}
	}
	m.mu.Unlock()
	for _, p := range problems {
		m.violate("device of %s: %s", t.host.Name, p)
	}
}

// judgePeer is what is wrong with one peer on a device. The caller holds mu.
func (m *soakModel) judgePeer(p wgtypes.Peer, now time.Time) []string {
	k := p.PublicKey
	var out []string
	switch {
	case m.garbage[k]:
		out = append(out, fmt.Sprintf("lists %s, the key of a record that breaks a rule", soakShort(k)))
	case m.intruders[k].IsValid():
		s := m.sightings[k]
		if s == nil {
			s = &soakSighting{first: m.since()}
			m.sightings[k] = s
		}
		s.last, s.samples = m.since(), s.samples+1
		for _, n := range p.AllowedIPs {
			if n.String() != m.intruders[k].String() {
				out = append(out, fmt.Sprintf("intruder %s routes %s, not the prefix it took", soakShort(k), n.String()))
			}
		}
	case m.legit[k] == nil:
		out = append(out, fmt.Sprintf("lists %s, a key nobody in the soak has", soakShort(k)))
	default:
		for _, n := range p.AllowedIPs {
			a, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			if pfx := netip.PrefixFrom(a.Unmap(), ones); !m.legit[k][pfx] {
				out = append(out, fmt.Sprintf("routes %s to %s, a prefix that host never claimed (a forged record applied)", pfx, m.nameOf(k)))
			}
		}
		if at, ok := m.revoked[k]; ok {
			m.evictedSeen = max(m.evictedSeen, now.Sub(at))
			if now.Sub(at) > soakRevokeGrace {
				out = append(out, fmt.Sprintf("lists %s more than %s after it was evicted", m.nameOf(k), soakRevokeGrace))
			}
		}
	}
	return out
}

// nameOf is the host name of key k. The caller holds mu.
func (m *soakModel) nameOf(k wgtypes.Key) string {
	for n, key := range m.names {
		if key == k {
			return n
		}
	}
	return soakShort(k)
}

// legitPrefix reports whether host name claimed prefix p (log audit).
func (m *soakModel) legitPrefix(name string, p netip.Prefix) (known, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, known := m.names[name]
	return known, known && m.legit[k][p]
}

// evictedAt is when host name was evicted, if it was.
func (m *soakModel) evictedAt(name string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.evicted[m.names[name]]
	return at, ok
}

// intruderReport summarises the intruder sightings: how many intruder keys
// devices listed, and the longest span one was seen over.
func (m *soakModel) intruderReport() (keys int, longest time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sightings {
		keys++
		longest = max(longest, s.last-s.first)
	}
	return keys, longest
}

func (m *soakModel) sampleCounts() (samples, peers int, evictedSeen time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples, m.peersSeen, m.evictedSeen
}

// soakShort is a key's first characters, enough to tell keys apart in a message.
func soakShort(k wgtypes.Key) string { return k.String()[:8] }

// soakSortedKeys is a map's keys in order, for stable reports.
func soakSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// soakIndent prefixes every line of s, for multi-line failure messages.
func soakIndent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}
