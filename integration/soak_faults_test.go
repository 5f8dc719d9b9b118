package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ikto-mesh/ikto/integration/harness"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// soakFault is one kind of fault, drawn with probability proportional to
// its weight. inject returns what it did, soakSkip when the world offers it
// nothing to act on, or another error when the soak itself failed.
type soakFault struct {
	kind   string
	weight float64
	inject func(*soak) (string, error)
}

// soakFaults are the kinds of fault, weighted so that a 30 s topology sees
// every kind at least once on most seeds, and the cheap faults (a kill, a
// write) far more often than the slow ones (a join, an eviction).
func soakFaults(deviceFaults bool) []soakFault {
	fs := []soakFault{
		{"agent-kill", 3, (*soak).killAgent},
		{"nats-kill", 1.5, (*soak).killNATS},
		{"garbage", 3, (*soak).writeGarbage},
		{"forged", 2, (*soak).writeForged},
		{"replay", 2, (*soak).writeReplay},
		{"takeover", 1, (*soak).takeOver},
		{"join", 1, (*soak).join},
		{"evict", 1, (*soak).evict},
		{"readdress", 1, (*soak).readdress},
		{"bucket-delete", 0.4, (*soak).deleteBucket},
	}
	if deviceFaults {
		fs = append(fs, soakFault{"device-delete", 1.5, (*soak).deleteDevice})
	}
	return fs
}

// Bounds of the mesh's size: the soak never evicts below soakMinMembers, never
// joins above the starting hosts + 2, and makes at most soakMaxHosts in all.
const (
	soakMinMembers = 4
	soakMaxHosts   = 60
)

// pickHost is a random host of hs that ok accepts (nil if none does). ok
// may ask the bucket, so it is called only until one is found.
func (s *soak) pickHost(hs []*soakHost, ok func(*soakHost) bool) *soakHost {
	s.rng.Shuffle(len(hs), func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
	for _, h := range hs {
		if ok(h) {
			return h
		}
	}
	return nil
}

// killAgent SIGKILLs a running agent and restarts it 0.1–4 s later, as
// systemd would.
func (s *soak) killAgent() (string, error) {
	h := s.pickHost(s.live(), func(h *soakHost) bool { return !h.steady && s.settled(h) })
	if h == nil {
		return "", soakSkip("no agent to kill")
	}
	pid := h.agent.PID
	if err := s.stopAgent(h, true); err != nil {
		return "", err
	}
	after := s.between(100*time.Millisecond, 4*time.Second)
	s.schedule(after, "restart of "+h.Name, func() error { return s.restart(h) })
	return fmt.Sprintf("SIGKILL %s (pid %d), restart in %s", h.Name, pid, after.Round(time.Millisecond)), nil
}

// restart starts h's agent again; an evicted host's agent must then refuse
// to claim and exit 4.
func (s *soak) restart(h *soakHost) error {
	if h.state != soakDown && h.state != soakEvicted {
		return nil
	}
	if err := s.startAgent(h); err != nil {
		return err
	}
	s.note("restarted %s (pid %d, %s)", h.Name, h.agent.PID, h.state)
	return nil
}

// killNATS stops a running server (on the cluster any member, so that now
// and then two or three are down at once) and starts it again 0.5–6 s later.
func (s *soak) killNATS() (string, error) {
	up := s.nats.running()
	if len(up) == 0 {
		return "", soakSkip("every server is down")
	}
	srv := up[s.rng.IntN(len(up))]
	srv.Shutdown()
	after := s.between(500*time.Millisecond, 6*time.Second)
	s.schedule(after, "restart of nats "+srv.Name(), func() error {
		s.nats.startInBackground(srv)
		return nil
	})
	return fmt.Sprintf("stop nats %s (%d of %d down), restart in %s", srv.Name(), s.nats.down(), len(s.nats.servers),
		after.Round(time.Millisecond)), nil
}

// collectNATS notes the servers whose background start ended.
func (s *soak) collectNATS() {
	for _, r := range s.nats.collect(false) {
		if r.err != nil {
			s.note("nats %s failed to start: %v", r.srv.Name(), r.err)
			s.model.violate("restart nats %s: %v", r.srv.Name(), r.err)
			continue
		}
		s.stats.natsStarts = append(s.stats.natsStarts, r.took)
		s.note("nats %s back after a %s start (%d of %d up)", r.srv.Name(), r.took.Round(time.Millisecond),
			len(s.nats.running()), len(s.nats.servers))
	}
}

// deleteDevice deletes a running agent's WireGuard device, as an interface
// manager might; the agent must recreate it with its peers.
func (s *soak) deleteDevice() (string, error) {
	h := s.pickHost(s.live(), func(*soakHost) bool { return true })
	if h == nil {
		return "", soakSkip("no running agent")
	}
	dev, err := h.Device()
	if err != nil || !soakLinkUp(h) {
		return "", soakSkip("device not there")
	}
	peers := dev.Peers
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.Exec(ctx, "ip", "link", "del", h.DevName); err != nil {
		return "", err
	}
	h.dels = append(h.dels, time.Now())
	h.delPeers = len(peers)
	return fmt.Sprintf("ip link del %s on %s (%d peers)", h.DevName, h.Name, len(peers)), nil
}

// checkDeviceHeals notes the devices that came back whole after a deletion:
// readable again and with at least the peers they had.
func (s *soak) checkDeviceHeals() {
	for _, h := range s.hosts {
		if len(h.dels) == 0 || h.state != soakRunning {
			continue
		}
		dev, err := h.Device()
		if err != nil || len(dev.Peers) < h.delPeers || !soakLinkUp(h) {
			continue
		}
		peers := dev.Peers
		took := time.Since(h.dels[0])
		s.stats.deviceHeals = append(s.stats.deviceHeals, took)
		s.note("%s's device back with %d peers after %s", h.Name, len(peers), took.Round(time.Millisecond))
		h.dels = nil
	}
}

// soakLinkUp reports whether h's WireGuard link exists and is up. The device's
// control socket may answer without it: wireguard-go outlives its TUN.
func soakLinkUp(h *soakHost) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := h.Exec(ctx, "ip", "-o", "link", "show", "dev", h.DevName)
	return err == nil && strings.Contains(out, ",UP")
}

// join adds a host to the network and starts its agent.
func (s *soak) join() (string, error) {
	if len(s.members()) >= s.cfg.hosts+2 || len(s.hosts) >= soakMaxHosts {
		return "", soakSkip("mesh at its largest")
	}
	s.joins++
	hh, err := s.net.AddHost(fmt.Sprintf("j%d", s.joins))
	if err != nil {
		return "", err
	}
	if s.used[hh.Prefix()] {
		hh.PrivateAddress = s.freshPrefix().Addr()
	}
	s.used[hh.Prefix()] = true
	h := &soakHost{Host: hh, state: soakDown}
	s.hosts = append(s.hosts, h)
	if err := s.startAgent(h); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s joins with %s (pid %d)", h.Name, h.Prefix(), h.agent.PID), nil
}

// soakEvictTimeout bounds one ikto-admin evict.
const soakEvictTimeout = 15 * time.Second

// evict runs the real `ikto-admin evict <address>` on a member (running, or
// killed with its restart due: that restart must then exit 4 too).
func (s *soak) evict() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	if len(s.members()) <= soakMinMembers {
		return "", soakSkip("mesh at its smallest")
	}
	h := s.pickHost(s.members(), func(h *soakHost) bool {
		own, known := s.holdsOwn(h)
		return !h.steady && own && known
	})
	if h == nil {
		return "", soakSkip("no member to evict")
	}
	bin, err := s.bins.Path(harness.AdminBinary)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakEvictTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-c", s.opCfg, "evict", h.PrivateAddress.String()).CombinedOutput()
	if err != nil && !s.revoked(h) {
		return "", soakSkip(fmt.Sprintf("ikto-admin evict %s: %v: %s", h.Name, err, out))
	}
	was := h.state
	h.state, h.evictedAt, h.revoked = soakEvicted, time.Now(), true
	s.model.revoke(h.PublicKey)
	s.released = append(s.released, h.Prefix())
	s.stats.evictions = append(s.stats.evictions, h)
	h.evictedRunning = was == soakRunning
	return fmt.Sprintf("ikto-admin evict %s (%s, %s)", h.PrivateAddress, h.Name, was), nil
}

// revoked reports whether h's key has a revoked.* record: evict writes it
// before it deletes the record, so a failed run may have evicted anyway.
func (s *soak) revoked(h *soakHost) bool {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	_, err := s.bucket.Get(ctx, peer.RevokedKey(h.PublicKey))
	return err == nil
}

// readdress restarts a running host with a new free prefix and the same
// key (SIGTERM, or SIGKILL one time in three): it claims the new prefix
// and releases the old.
func (s *soak) readdress() (string, error) {
	h := s.pickHost(s.live(), func(h *soakHost) bool { return !h.steady && s.settled(h) })
	if h == nil {
		return "", soakSkip("no agent to re-address")
	}
	kill := s.rng.IntN(3) == 0
	if err := s.stopAgent(h, kill); err != nil {
		return "", err
	}
	old := h.Prefix()
	h.PrivateAddress = s.freshPrefix().Addr()
	s.released, h.moved = append(s.released, old), append(h.moved, old)
	if err := s.startAgent(h); err != nil {
		return "", err
	}
	how := map[bool]string{true: "SIGKILL", false: "SIGTERM"}[kill]
	return fmt.Sprintf("%s moves %s → %s (%s, pid %d)", h.Name, old, h.Prefix(), how, h.agent.PID), nil
}

// deleteBucket deletes the whole bucket under the running mesh. The agents
// make it again and write their records back. Revocations go with it, so
// it waits until every evicted agent has exited.
func (s *soak) deleteBucket() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	for _, h := range s.hosts {
		if h.state == soakEvicted && h.exitedAt.IsZero() {
			return "", soakSkip("an evicted agent has not exited yet")
		}
	}
	js, err := jetstream.New(s.bucket.Conn)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, soakBucket); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return "", soakSkip("no bucket to delete")
		}
		return "", soakSkip("delete bucket: " + err.Error())
	}
	s.model.unrevoke()
	for _, h := range s.hosts {
		h.revoked, h.pending = false, false
	}
	return "delete bucket " + soakBucket, nil
}
