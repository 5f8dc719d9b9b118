package peer

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// referenceModel is docs/contract.md §5's rule written the plain way: it
// replays what it was told and re-resolves everything from scratch after
// every operation. The incremental Table must always agree with it.
type referenceModel struct {
	rules      Rules
	self       wgtypes.Key
	selfPrefix netip.Prefix

	present map[string]modelSlot
	best    map[wgtypes.Key]Accepted
	void    map[wgtypes.Key]uint64
	since   map[wgtypes.Key]int
	revoked map[wgtypes.Key]bool
	recRej  map[string]Rejection
	holder  map[netip.Prefix]wgtypes.Key
	evicted bool
	n       int
}

type modelSlot struct {
	marker bool
	acc    Accepted
	rej    *Rejection
}

func newModel(ru Rules, self wgtypes.Key, selfPrefix netip.Prefix) *referenceModel {
	m := &referenceModel{rules: ru, self: self, selfPrefix: selfPrefix,
		best: map[wgtypes.Key]Accepted{}, void: map[wgtypes.Key]uint64{}, since: map[wgtypes.Key]int{},
		revoked: map[wgtypes.Key]bool{}, holder: map[netip.Prefix]wgtypes.Key{}}
	m.reset()
	return m
}

func (m *referenceModel) reset() {
	m.present, m.recRej = map[string]modelSlot{}, map[string]Rejection{}
}

func (m *referenceModel) seen(pk wgtypes.Key) {
	if _, ok := m.since[pk]; !ok {
		m.n++
		m.since[pk] = m.n
	}
}

// statement takes a valid signed record if it is its key's newest; the
// same one seen again in the bucket (inBucket) moves its revision.
func (m *referenceModel) statement(a Accepted, inBucket bool) {
	b, ok := m.best[a.PublicKey]
	switch {
	case a.Seq <= m.void[a.PublicKey]:
	case !ok || a.Seq > b.Seq:
		m.seen(a.PublicKey)
		m.best[a.PublicKey] = a
		if a.Retires != (wgtypes.Key{}) {
			m.remove(a.Retires, math.MaxUint64)
		}
	case inBucket && a.Seq == b.Seq && a.Key == b.Key && a.Record == b.Record:
		m.best[a.PublicKey] = a
	}
}

func (m *referenceModel) recall(key string, value []byte, rev uint64) {
	if a, rej := m.rules.Check(key, value, rev); rej == nil && a.Signed() {
		m.statement(a, false)
	}
}

func (m *referenceModel) put(key string, value []byte, rev uint64) {
	delete(m.recRej, key)
	if strings.HasPrefix(key, RevokedPrefix) {
		pk, err := ParseRevokedKey(key)
		if err != nil {
			return
		}
		if err := m.rules.RevocationCounts(pk, value); err != nil {
			m.recRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature, Detail: err.Error()}
			return
		}
		m.revoked[pk] = true
		return
	}
	if !strings.HasPrefix(key, PeersPrefix) {
		return
	}
	a, rej := m.rules.Check(key, value, rev)
	m.present[key] = modelSlot{acc: a, rej: rej}
	if rej != nil {
		m.recRej[key] = *rej
		return
	}
	m.seen(a.PublicKey)
	if a.Signed() {
		m.statement(a, true)
	}
}

func (m *referenceModel) remove(pk wgtypes.Key, seq uint64) {
	m.void[pk] = max(m.void[pk], seq)
	b, ok := m.best[pk]
	if ok && b.Seq <= seq {
		delete(m.best, pk)
		if pk == m.self {
			m.evicted = true
		}
	}
}

func (m *referenceModel) del(key string, body []byte, rev uint64) {
	delete(m.recRej, key)
	if strings.HasPrefix(key, RevokedPrefix) {
		pk, err := ParseRevokedKey(key)
		if err != nil || !m.revoked[pk] {
			return
		}
		if len(m.rules.Operators) > 0 {
			c, named, err := m.rules.ParseCommand(key, body)
			if err != nil || named != pk || c.Signer == c.PublicKey {
				m.recRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature}
				return
			}
		}
		delete(m.revoked, pk)
		return
	}
	was, had := m.present[key]
	m.present[key] = modelSlot{marker: true}
	c, pk, err := m.rules.ParseCommand(key, body)
	switch {
	case err == nil:
		m.remove(pk, c.Seq)
	case len(body) > 0:
		m.recRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature}
	case len(m.rules.Operators) == 0:
		p, _ := ParseKey(key)
		h, held := m.holder[p]
		if key == Key(m.selfPrefix) {
			h, held = m.self, true
		}
		follows := !had || !was.marker && was.rej == nil && was.acc.PublicKey == h && was.acc.Seq == m.best[h].Seq
		if b, ok := m.best[h]; held && ok && b.Key == key && follows {
			m.remove(h, b.Seq)
		}
	}
}

// resolve decides everything from scratch and remembers who holds each
// prefix (the next resolution keeps a holder that still contends).
func (m *referenceModel) resolve() View {
	selfEntry := Key(m.selfPrefix)
	v := View{Peers: map[wgtypes.Key]Accepted{}, SelfRevoked: m.revoked[m.self]}
	setRej := map[string]Rejection{}
	byKey := map[wgtypes.Key][]Accepted{}
	for _, s := range m.present {
		if !s.marker && s.rej == nil {
			byKey[s.acc.PublicKey] = append(byKey[s.acc.PublicKey], s.acc)
		}
	}
	keys := map[wgtypes.Key]bool{}
	for pk := range m.best {
		keys[pk] = true
	}
	for pk := range byKey {
		keys[pk] = true
	}
	cands := map[wgtypes.Key]Accepted{}
	for pk := range keys {
		var now *Accepted
		if b, ok := m.best[pk]; ok {
			now = &b
		}
		signs := now != nil || m.void[pk] > 0
		recs := byKey[pk]
		slices.SortFunc(recs, func(a, b Accepted) int {
			return cmp.Or(cmp.Compare(a.Revision, b.Revision), strings.Compare(a.Key, b.Key))
		})
		for _, a := range recs {
			switch {
			case pk == m.self && a.Key == selfEntry && now != nil && a.Seq == now.Seq && a.Key == now.Key:
			case pk == m.self && a.Key != selfEntry:
				setRej[a.Key] = rejection(a, ReasonOwnKey, "")
			case m.revoked[pk]:
				setRej[a.Key] = rejection(a, ReasonRevoked, "")
			case !a.Signed() && signs:
				setRej[a.Key] = rejection(a, ReasonUnsigned, "")
			case a.Signed() && (now == nil || a.Seq < now.Seq):
				setRej[a.Key] = rejection(a, ReasonSuperseded, "")
			case now == nil:
				now = &a
			case now.Key != a.Key:
				setRej[a.Key] = rejection(a, ReasonDuplicateKey, "")
			}
		}
		if now != nil && pk != m.self && !m.revoked[pk] {
			cands[pk] = *now
		}
	}
	contenders := map[netip.Prefix][]wgtypes.Key{}
	for pk, c := range cands {
		contenders[c.Prefix] = append(contenders[c.Prefix], pk)
	}
	holder := map[netip.Prefix]wgtypes.Key{}
	for p, ks := range contenders {
		h, ok := m.holder[p]
		if !ok || !slices.Contains(ks, h) {
			h = slices.MinFunc(ks, func(a, b wgtypes.Key) int {
				return cmp.Or(cmp.Compare(m.since[a], m.since[b]), bytes.Compare(a[:], b[:]))
			})
		}
		holder[p] = h
		if p != m.selfPrefix {
			v.Peers[h] = cands[h]
		}
		if s, ok := m.present[Key(p)]; ok && !s.marker && s.rej == nil && s.acc.PublicKey != h && slices.Contains(ks, s.acc.PublicKey) {
			if _, ok := setRej[Key(p)]; !ok {
				setRej[Key(p)] = rejection(s.acc, ReasonPrefixTaken, "")
			}
		}
	}
	m.holder = holder
	for _, r := range m.recRej {
		v.Rejected = append(v.Rejected, r)
	}
	for _, r := range setRej {
		v.Rejected = append(v.Rejected, r)
	}
	slices.SortFunc(v.Rejected, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	if s, ok := m.present[selfEntry]; ok && !s.marker {
		switch r, set := setRej[selfEntry]; {
		case s.rej != nil:
			v.SelfRejected = s.rej
		case s.acc.PublicKey == m.self && set:
			v.SelfRejected = &r
		default:
			a := s.acc
			v.Self = &a
		}
	}
	if m.evicted {
		v.SelfEvicted = "evicted"
	}
	return v
}

// modelWorld is what random histories are made of: a few hosts (this one
// first), prefixes (this host's first, one outside the mesh), seqs, and
// commands, signed once and reused.
type modelWorld struct {
	rules    Rules
	hosts    []host
	prefixes []string
	op       ed25519.PrivateKey
	stranger ed25519.PrivateKey
	signed   map[string][]byte
}

func newModelWorld(t testing.TB, operators bool) *modelWorld {
	w := &modelWorld{rules: signedRules, signed: map[string][]byte{},
		prefixes: []string{"fd10:1::/48", "fd10:2::/48", "fd10:3::/48", "fd10:4::/48", "fd11::/48"}}
	for i := range 4 {
		w.hosts = append(w.hosts, newHost(t, fmt.Sprint("h", i)))
	}
	var err error
	var op ed25519.PublicKey
	if op, w.op, err = ed25519.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	if _, w.stranger, err = ed25519.GenerateKey(nil); err != nil {
		t.Fatal(err)
	}
	if operators {
		w.rules.Operators = []ed25519.PublicKey{op}
	}
	return w
}

// value is host h's record of prefix p with seq, signed, or unsigned
// when seq is 0 (cached: signing is the slow part).
func (w *modelWorld) value(t testing.TB, h, p int, seq uint64) []byte {
	id := fmt.Sprint("rec", h, p, seq)
	if v, ok := w.signed[id]; ok {
		return v
	}
	ho := w.hosts[h]
	r := Record{Name: ho.name, PublicKey: ho.pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: w.prefixes[p], WGPort: 51820}
	if seq > 0 {
		r = ho.record(t, w.rules, w.prefixes[p], seq)
	}
	w.signed[id] = r.Encode()
	return w.signed[id]
}

// handover is host to's record of prefix p with seq, handed over by host
// from (a key rotation).
func (w *modelWorld) handover(t testing.TB, from, to, p int, seq uint64) []byte {
	id := fmt.Sprint("rot", from, to, p, seq)
	if v, ok := w.signed[id]; ok {
		return v
	}
	ho := w.hosts[to]
	r := Record{Name: ho.name, PublicKey: ho.pub.String(), AdvertiseAddress: "198.18.0.9", AllowedIP: w.prefixes[p], WGPort: 51820, Seq: seq}
	if err := w.rules.SignHandover(&r, w.hosts[from].priv); err != nil {
		t.Fatal(err)
	}
	if err := w.rules.SignRecord(&r, ho.priv); err != nil {
		t.Fatal(err)
	}
	w.signed[id] = r.Encode()
	return w.signed[id]
}

// command is a delete marker's body at key for host h up to seq: by the
// host (by 0), the operator (1), a stranger (2).
func (w *modelWorld) command(t testing.TB, key string, h int, seq uint64, by int) []byte {
	id := fmt.Sprint("cmd", key, h, seq, by)
	if v, ok := w.signed[id]; ok {
		return v
	}
	ho := w.hosts[h]
	var c Command
	switch by {
	case 0:
		var err error
		if c, err = w.rules.HostCommand(key, ho.priv, seq); err != nil {
			t.Fatal(err)
		}
	case 1:
		c = w.rules.OperatorCommand(key, ho.pub, seq, w.op)
	default:
		c = w.rules.OperatorCommand(key, ho.pub, seq, w.stranger)
	}
	w.signed[id] = c.Encode()
	return w.signed[id]
}

// apply performs one operation, chosen by the bytes in op, on both the
// table and the model.
func (w *modelWorld) apply(t testing.TB, tb *Table, m *referenceModel, op [4]byte, rev uint64) string {
	h, p := int(op[1])%len(w.hosts), int(op[2])%len(w.prefixes)
	seq := uint64(op[3]%4) + 10
	key := Key(netip.MustParsePrefix(w.prefixes[p]))
	revKey := RevokedKey(w.hosts[h].pub)
	switch op[0] % 13 {
	case 12:
		// A key rotation: host h2 takes over h's prefix p, handed over by h.
		h2 := (h + 1 + int(op[3]>>4)%(len(w.hosts)-1)) % len(w.hosts)
		v := w.handover(t, h, h2, p, seq)
		tb.Put(key, v, rev)
		m.put(key, v, rev)
		return fmt.Sprintf("handover %s → %s seq %d at %s", w.hosts[h].name, w.hosts[h2].name, seq, w.prefixes[p])
	case 0, 1, 2, 3:
		v := w.value(t, h, p, seq)
		tb.Put(key, v, rev)
		m.put(key, v, rev)
		return fmt.Sprintf("put %s seq %d at %s", w.hosts[h].name, seq, w.prefixes[p])
	case 4:
		v := w.value(t, h, p, 0)
		tb.Put(key, v, rev)
		m.put(key, v, rev)
		return fmt.Sprintf("put unsigned %s at %s", w.hosts[h].name, w.prefixes[p])
	case 5:
		// A signed record copied under another key.
		other := Key(netip.MustParsePrefix(w.prefixes[(p+1)%len(w.prefixes)]))
		v := w.value(t, h, p, seq)
		tb.Put(other, v, rev)
		m.put(other, v, rev)
		return "copy to " + other
	case 6:
		tb.Put(key, []byte("garbage"), rev)
		m.put(key, []byte("garbage"), rev)
		return "garbage at " + w.prefixes[p]
	case 7:
		tb.Delete(key, nil, rev)
		m.del(key, nil, rev)
		return "plain delete at " + w.prefixes[p]
	case 8:
		body := w.command(t, key, h, seq, int(op[3]/4)%3)
		tb.Delete(key, body, rev)
		m.del(key, body, rev)
		return fmt.Sprintf("command %d for %s seq %d at %s", op[3]/4%3, w.hosts[h].name, seq, w.prefixes[p])
	case 9:
		rv := Revocation{PublicKey: w.hosts[h].pub.String()}
		if op[3]%2 == 0 {
			w.rules.SignRevocation(&rv, w.op)
		}
		v := mustJSON(t, rv)
		tb.Put(revKey, v, rev)
		m.put(revKey, v, rev)
		return "revoke " + w.hosts[h].name
	case 10:
		var body []byte
		if op[3]%2 == 0 {
			body = w.rules.OperatorCommand(revKey, w.hosts[h].pub, 0, w.op).Encode()
		}
		tb.Delete(revKey, body, rev)
		m.del(revKey, body, rev)
		return "unrevoke " + w.hosts[h].name
	default:
		if op[3]%2 == 0 {
			tb.Reset()
			m.reset()
			return "reset"
		}
		v := w.value(t, h, p, seq)
		tb.Recall(key, v, rev)
		m.recall(key, v, rev)
		return "recall"
	}
}

// compare checks the table's outcome against the model's.
func compareWithModel(t testing.TB, step int, what string, tb *Table, m *referenceModel) {
	t.Helper()
	d := tb.Update()
	got, want := tb.View(), m.resolve()
	norm := func(v View) View {
		v.SelfEvicted = map[bool]string{true: "evicted"}[v.SelfEvicted != ""]
		for i := range v.Rejected {
			v.Rejected[i].Detail = ""
		}
		if v.SelfRejected != nil {
			r := *v.SelfRejected
			r.Detail = ""
			v.SelfRejected = &r
		}
		if len(v.Rejected) == 0 {
			v.Rejected = nil
		}
		return v
	}
	got.Rejected = slices.Clone(got.Rejected)
	if diff := gocmp.Diff(norm(want), norm(got), equateNetip); diff != "" {
		t.Fatalf("step %d (%s): table differs from the model (-model +table):\n%s", step, what, diff)
	}
	// Whatever the model says, these hold: one peer per prefix, never this
	// host's key or prefix, and every peer's record passes the per-record
	// rules.
	seen := map[netip.Prefix]bool{}
	for k, p := range got.Peers {
		if seen[p.Prefix] || k == m.self || p.Prefix == m.selfPrefix || p.PublicKey != k {
			t.Fatalf("step %d (%s): peer %s at %s breaks an invariant", step, what, k, p.Prefix)
		}
		seen[p.Prefix] = true
		if _, rej := m.rules.Check(p.Key, p.Record.Encode(), p.Revision); rej != nil {
			t.Fatalf("step %d (%s): peer %s's record fails the per-record rules: %v", step, what, k, rej)
		}
	}
	if d.Peers != len(want.Peers) {
		t.Fatalf("step %d (%s): Delta.Peers = %d, want %d", step, what, d.Peers, len(want.Peers))
	}
}

// equateNetip compares addresses and prefixes by value.
var equateNetip = gocmp.Options{
	gocmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	gocmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

// TestTableMatchesReference drives the incremental table with random
// histories and checks it against the model, sometimes after each
// operation, sometimes after a burst (one Update for several events).
func TestTableMatchesReference(t *testing.T) {
	for _, operators := range []bool{false, true} {
		w := newModelWorld(t, operators)
		for seed := range uint64(6) {
			t.Run(fmt.Sprintf("operators %v seed %d", operators, seed), func(t *testing.T) {
				rnd := rand.New(rand.NewPCG(seed, 7))
				self := w.hosts[0]
				tb := NewTable(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
				m := newModel(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
				var log []string
				for i := range 300 {
					var op [4]byte
					for j := range op {
						op[j] = byte(rnd.UintN(256))
					}
					log = append(log, w.apply(t, tb, m, op, uint64(i+1)))
					if rnd.IntN(3) > 0 {
						compareWithModel(t, i, strings.Join(log[max(0, len(log)-4):], "; "), tb, m)
					}
				}
				compareWithModel(t, 300, "end", tb, m)
			})
		}
	}
}

// FuzzTableModel is TestTableMatchesReference for histories the fuzzer
// picks: four bytes per operation.
func FuzzTableModel(f *testing.F) {
	f.Add([]byte{0, 1, 1, 0, 0, 2, 1, 1, 7, 2, 1, 0})
	f.Add([]byte{0, 1, 1, 0, 11, 0, 0, 0, 0, 2, 1, 0})
	f.Add([]byte{0, 0, 0, 0, 8, 0, 0, 4, 0, 1, 1, 0})
	w := newModelWorld(f, true)
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4*48 {
			ops = ops[:4*48]
		}
		self := w.hosts[0]
		tb := NewTable(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
		m := newModel(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
		for i := 0; i+4 <= len(ops); i += 4 {
			what := w.apply(t, tb, m, [4]byte(ops[i:i+4]), uint64(i/4+1))
			compareWithModel(t, i/4, what, tb, m)
		}
	})
}

// Load, which checks a large batch's records on every CPU, ends where the
// same writes made one by one end.
func TestLoadMatchesPut(t *testing.T) {
	w := newModelWorld(t, true)
	rnd := rand.New(rand.NewPCG(3, 9))
	self := w.hosts[0]
	one := NewTable(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
	batched := NewTable(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
	m := newModel(w.rules, self.pub, netip.MustParsePrefix(w.prefixes[0]))
	rev := uint64(0)
	for batch := range 20 {
		var writes []Write
		for range 64 + rnd.IntN(64) {
			rev++
			h, p := rnd.IntN(len(w.hosts)), rnd.IntN(len(w.prefixes))
			key := Key(netip.MustParsePrefix(w.prefixes[p]))
			switch rnd.IntN(5) {
			case 0:
				writes = append(writes, Write{Key: key, Revision: rev, Deleted: true})
			case 1:
				writes = append(writes, Write{Key: key, Value: []byte("garbage"), Revision: rev})
			default:
				writes = append(writes, Write{Key: key, Value: w.value(t, h, p, uint64(10+rnd.IntN(4))), Revision: rev})
			}
		}
		for _, wr := range writes {
			if wr.Deleted {
				one.Delete(wr.Key, wr.Value, wr.Revision)
				m.del(wr.Key, wr.Value, wr.Revision)
			} else {
				one.Put(wr.Key, wr.Value, wr.Revision)
				m.put(wr.Key, wr.Value, wr.Revision)
			}
		}
		batched.Load(writes)
		compareWithModel(t, batch, "one by one", one, m)
		if diff := gocmp.Diff(one.Resolve(), batched.Resolve(), equateNetip); diff != "" {
			t.Fatalf("batch %d: Load differs from Put and Delete (-one by one +Load):\n%s", batch, diff)
		}
	}
}
