package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Names of the records the soak writes as an attacker: the log audit knows
// an applied one by its name.
const (
	soakGarbageName  = "soak-garbage-"  // breaks an acceptance rule: never applied
	soakForgedName   = "soak-forged-"   // another live host's key under a prefix it does not hold: never applied
	soakIntruderName = "soak-intruder-" // a fresh key over a live host's claim: applied until its victim restores it
)

// The agent defends its claim at most maxDefends (3) times in a contest, and
// a contest ends only after a minute without one (contestMemory). The soak
// keeps its writes on one host's key within that bound, so that a host
// standing down is a finding, not the soak's doing.
const (
	soakChainMax   = 3
	soakChainQuiet = 70 * time.Second
)

// soakWriteChain counts the soak's writes on one host's key within a contest.
type soakWriteChain struct {
	n    int
	last time.Time
}

func (c *soakWriteChain) allow(now time.Time) bool {
	if now.Sub(c.last) >= soakChainQuiet {
		c.n = 0
	}
	return c.n < soakChainMax
}

func (c *soakWriteChain) note(now time.Time) {
	c.allow(now)
	c.n++
	c.last = now
}

// soakSkip is a fault that does not apply to the world as it is now (nothing
// to kill, NATS down for a write); the loop counts it and picks again.
type soakSkip string

func (e soakSkip) Error() string { return string(e) }

// hostileTarget picks where a hostile write goes: with probability onHost a
// running host's claim whose contest has room, else a free key (a fresh
// prefix, or one a host left).
func (s *soak) hostileTarget(onHost float64) (*soakHost, netip.Prefix) {
	now := time.Now()
	var victims []*soakHost
	for _, h := range s.live() {
		if h.writes.allow(now) && s.hasClaimed(h) {
			victims = append(victims, h)
		}
	}
	if len(victims) > 0 && s.rng.Float64() < onHost {
		v := victims[s.rng.IntN(len(victims))]
		return v, v.Prefix()
	}
	if len(s.released) > 0 && s.rng.IntN(3) == 0 {
		return nil, s.released[s.rng.IntN(len(s.released))]
	}
	return nil, s.freshPrefix()
}

// freshPrefix is a random /48 of the mesh that nothing used yet.
func (s *soak) freshPrefix() netip.Prefix {
	for {
		a := s.net.Mesh.Addr().As16()
		for i := 2; i < 6; i++ {
			a[i] = byte(s.rng.UintN(256))
		}
		p := netip.PrefixFrom(netip.AddrFrom16(a), 48).Masked()
		if !s.used[p] {
			s.used[p] = true
			return p
		}
	}
}

// freshKey is a random public key (any 32 bytes will do for a record).
func (s *soak) freshKey() wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = byte(s.rng.UintN(256))
	}
	return k
}

// unusedUnderlay is an underlay address no host has: a hostile record's
// endpoint (hosts take .2 upwards, and the soak makes far fewer than 248).
func (s *soak) unusedUnderlay() netip.Addr {
	b := s.net.Subnet.Addr().As4()
	b[3] = 250
	return netip.AddrFrom4(b)
}

// hostileRecord is a valid-looking record for target under name.
func (s *soak) hostileRecord(name string, k wgtypes.Key, target netip.Prefix) peer.Record {
	s.hostile++
	return peer.Record{Name: fmt.Sprintf("%s%d", name, s.hostile), PublicKey: k.String(),
		AdvertiseAddress: s.unusedUnderlay().String(), AllowedIP: target.String(), WGPort: 51820}
}

// put writes value at target's key, charging the write to victim's contest.
func (s *soak) put(target netip.Prefix, value []byte, victim *soakHost) error {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	if _, err := s.bucket.Put(ctx, peer.Key(target), value); err != nil {
		return soakSkip("put: " + err.Error())
	}
	if victim != nil {
		victim.writes.note(time.Now())
		victim.pending = true
	}
	return nil
}

func soakVictimName(v *soakHost) string {
	if v == nil {
		return "free key"
	}
	return v.Name + "'s claim"
}

// writeGarbage puts a value that breaks an acceptance rule at a live host's
// key or a free one. Its owner restores its record; nobody applies it.
func (s *soak) writeGarbage() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	victim, target := s.hostileTarget(0.6)
	k := s.freshKey()
	r := s.hostileRecord(soakGarbageName, k, target)
	var what string
	switch variant := s.rng.IntN(7); variant {
	case 0:
		what = "not JSON"
	case 1:
		r.AdvertiseAddress, what = "127.0.0.1", "loopback endpoint"
	case 2:
		r.WGPort, what = 0, "port 0"
	case 3:
		r.PublicKey, what = wgtypes.Key{}.String(), "all-zero key"
	case 4:
		r.AllowedIP, what = s.net.Mesh.String(), "the whole mesh under the key"
	case 5:
		r.AllowedIP, what = s.otherPrefix(target).String(), "another prefix under the key"
	case 6:
		if ek, ok := s.revokedKey(); ok {
			r.PublicKey, what = ek.String(), "an evicted host's key"
		} else {
			r.WGPort, what = 65536, "port 65536"
		}
	}
	s.model.addGarbage(k)
	value := r.Encode()
	if what == "not JSON" {
		value = []byte("soak: this is not a peer record")
	}
	if err := s.put(target, value, victim); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%s) at %s %s", r.Name, what, soakVictimName(victim), target), nil
}

// otherPrefix is a member's prefix other than p, or the mesh's first /48.
func (s *soak) otherPrefix(p netip.Prefix) netip.Prefix {
	ms := s.members()
	s.rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	for _, h := range ms {
		if h.Prefix() != p {
			return h.Prefix()
		}
	}
	return netip.PrefixFrom(s.net.Mesh.Addr(), 48)
}

// revokedKey is the key of an evicted host whose revocation is still in the
// bucket.
func (s *soak) revokedKey() (wgtypes.Key, bool) {
	var ks []wgtypes.Key
	for _, h := range s.hosts {
		if h.state == soakEvicted && h.revoked {
			ks = append(ks, h.PublicKey)
		}
	}
	if len(ks) == 0 {
		return wgtypes.Key{}, false
	}
	return ks[s.rng.IntN(len(ks))], true
}

// writeForged copies a live host's key into a record for another prefix —
// another live host's claim or a free key — as an attacker who holds no
// private key can: the owner's signed record as it is (its key does not
// encode its prefix), with its prefix and endpoint changed (the signature
// fails), or unsigned under another name (the key signs its records).
// Nobody applies it; a claim's owner restores its record.
func (s *soak) writeForged() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	// The copy must be younger than the owner's record, which it cannot
	// be told from otherwise: an owner still claiming is no owner yet.
	owner := s.pickHost(s.live(), s.hasClaimed)
	if owner == nil {
		return "", soakSkip("no live host has claimed")
	}
	victim, target := s.hostileTarget(0.5)
	if victim == owner {
		victim, target = nil, s.freshPrefix()
	}
	r := s.hostileRecord(soakForgedName+owner.Name+"-", owner.PublicKey, target)
	how := "unsigned"
	if signed, ok := s.signedRecord(owner); ok {
		switch s.rng.IntN(3) {
		case 0:
			r, how = signed, "signed, as it is"
		case 1:
			signed.AllowedIP, signed.AdvertiseAddress = target.String(), s.unusedUnderlay().String()
			r, how = signed, "signed, altered"
		}
	}
	if err := s.put(target, r.Encode(), victim); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%s's key, %s) at %s %s", r.Name, owner.Name, how, soakVictimName(victim), target), nil
}

// signedRecord reads h's signed record from the bucket.
func (s *soak) signedRecord(h *soakHost) (peer.Record, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	r, err := s.bucket.Record(ctx, h.Prefix())
	if err != nil || r.Sig == "" || r.PublicKey != h.PublicKey.String() {
		return peer.Record{}, false
	}
	return r, true
}

// writeReplay puts a host's earlier signed record back over its claim once
// the host has superseded it (a restart rewrites it with a higher seq): an
// old statement replayed. Nobody applies it; the host restores its record.
// Each call first notes the signed record of every live host it has none
// of, so that later calls have old statements to replay.
func (s *soak) writeReplay() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	if s.said == nil {
		s.said = map[string][]byte{}
	}
	now := time.Now()
	var victim *soakHost
	var old, cur peer.Record
	for _, h := range s.live() {
		if !s.hasClaimed(h) {
			continue
		}
		r, ok := s.signedRecord(h)
		if !ok {
			continue
		}
		var was peer.Record
		if json.Unmarshal(s.said[h.Name], &was) != nil || was.AllowedIP != r.AllowedIP {
			s.said[h.Name] = r.Encode()
			continue
		}
		if victim == nil && was.Seq < r.Seq && h.writes.allow(now) {
			victim, old, cur = h, was, r
		}
	}
	if victim == nil {
		return "", soakSkip("no live host has superseded a record the soak read yet")
	}
	s.said[victim.Name] = cur.Encode()
	if err := s.put(victim.Prefix(), old.Encode(), victim); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s's record of seq %d replayed over its claim (now seq %d)", victim.Name, old.Seq, cur.Seq), nil
}

// takeOver writes a valid record of a fresh key over a live host's claim.
// The victim restores its own with compare-and-set; until then the other
// agents accept the intruder, as they must any valid record.
func (s *soak) takeOver() (string, error) {
	if !s.nats.writable() {
		return "", soakSkip("NATS down")
	}
	victim, target := s.hostileTarget(1)
	if victim == nil {
		return "", soakSkip("no live host's contest has room")
	}
	k := s.freshKey()
	s.model.addIntruder(k, target)
	r := s.hostileRecord(soakIntruderName, k, target)
	if err := s.put(target, r.Encode(), victim); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s over %s %s", r.Name, soakVictimName(victim), target), nil
}
