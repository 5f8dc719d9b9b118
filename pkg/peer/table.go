package peer

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Table holds what an agent knows of the bucket and decides which records
// it accepts, by one rule (docs/contract.md §5): a statement counts only
// when signed by the key that has the authority to make it; everything else
// is state.
//
//   - A public key's record is its valid signed record with the highest
//     seq the table has seen. It stays when the bucket loses it or someone
//     writes over it (state, healed by its host or any agent), and goes only
//     by a statement: a newer record of the key (a move), a handover to a
//     new key (a rotation), or a command (a delete marker signed by the key
//     or an operator key; without operator keys, a plain delete marker
//     after the record at its key; a revocation).
//   - An unsigned record (ikto 0.3.0's) counts, unless signatures are
//     required, for a key never seen signed, while it is in the bucket; of
//     several, the oldest revision.
//   - A prefix is held by one key: the record accepted there first keeps it
//     until its key leaves it.
//   - This host's own key is never a peer.
//
// Resolution is incremental: Put, Delete and Recall mark the public keys
// they touch, and Update re-decides those keys and the prefixes their
// records name, so a watch event costs O(records of its key).
//
// A Table is not safe for concurrent use, except View, which may be called
// from any goroutine (the admin socket's status handler).
type Table struct {
	rules      Rules
	selfKey    wgtypes.Key
	selfPrefix netip.Prefix
	selfEntry  string // Key(selfPrefix)

	// present is what the bucket holds now, by bucket key, since Reset.
	present map[string]slot
	// signed is each key's valid signed record with the highest seq seen,
	// whether or not the bucket still holds it.
	signed map[wgtypes.Key]Accepted
	// void is, per key, the seq up to which commands removed its records.
	void map[wgtypes.Key]uint64
	// records indexes the present valid records by public key: their
	// bucket keys (nearly always one).
	records map[wgtypes.Key][]string
	// revoked are the revoked keys, with the revocations' values (to
	// write back as they were).
	revoked map[wgtypes.Key][]byte
	// since orders first sightings: on a free prefix the key seen first
	// wins.
	since   map[wgtypes.Key]uint64
	counter uint64

	// cand is each key's record, before the prefix rule (where it is:
	// signed, or present at a bucket key); byPrefix indexes them; holder
	// is the key each prefix is given to.
	cand     map[wgtypes.Key]candRef
	byPrefix map[netip.Prefix][]wgtypes.Key
	holder   map[netip.Prefix]wgtypes.Key

	dirty       map[wgtypes.Key]struct{}
	dirtyPrefix map[netip.Prefix]struct{}
	selfDirty   bool
	evicted     string               // why a command removed this host's record; "" if none
	recordRej   map[string]Rejection // per-record rejections of present values and markers
	setRej      map[string]Rejection // set-rule rejections, by bucket key
	setRejOfKey map[wgtypes.Key][]string
	prefixRej   map[string]Rejection // prefix_taken, by bucket key
	rejDirty    bool

	// The outcome of the last Update; mu guards it against View.
	mu          sync.Mutex
	peers       map[wgtypes.Key]Accepted
	self        *Accepted
	selfRej     *Rejection
	selfRevoked bool
	selfEvicted string
	rejected    []Rejection // in key order; never modified once built
	view        *View       // built on demand, dropped by any change
}

// slot is the bucket's value at one key: a record (accepted by the
// per-record rules or rejected) or a delete marker.
type slot struct {
	acc    Accepted
	rej    *Rejection
	marker bool
}

// candRef says where a key's candidate record is: the key's signed record,
// or the unsigned one present at key. Any change to either re-decides the
// key before the record is read again, so the reference never goes stale.
type candRef struct {
	signed bool
	key    string
	prefix netip.Prefix
}

// record is the candidate record r refers to.
func (t *Table) record(pk wgtypes.Key, r candRef) Accepted {
	if r.signed {
		return t.signed[pk]
	}
	return t.present[r.key].acc
}

type member struct {
	key string
	rev uint64
}

func (m member) compare(o member) int {
	return cmp.Or(cmp.Compare(m.rev, o.rev), strings.Compare(m.key, o.key))
}

// NewTable returns an empty table for a host with public key self that claims
// prefix selfPrefix.
func NewTable(rules Rules, self wgtypes.Key, selfPrefix netip.Prefix) *Table {
	t := &Table{
		rules: rules, selfKey: self, selfPrefix: selfPrefix, selfEntry: Key(selfPrefix),
		signed: map[wgtypes.Key]Accepted{}, void: map[wgtypes.Key]uint64{}, revoked: map[wgtypes.Key][]byte{},
		since: map[wgtypes.Key]uint64{}, cand: map[wgtypes.Key]candRef{},
		byPrefix: map[netip.Prefix][]wgtypes.Key{}, holder: map[netip.Prefix]wgtypes.Key{},
		dirty: map[wgtypes.Key]struct{}{}, dirtyPrefix: map[netip.Prefix]struct{}{},
		setRej: map[string]Rejection{}, setRejOfKey: map[wgtypes.Key][]string{}, prefixRej: map[string]Rejection{},
		peers: map[wgtypes.Key]Accepted{},
	}
	t.Reset()
	return t
}

// Reset forgets what the bucket holds, before a fresh snapshot is loaded.
// What the table learnt from statements stays: signed records, commands and
// revocations are not undone by a bucket that lost them (made again,
// restored from an older backup). The outcome changes only at the next
// Update, which reports just the peers the snapshot really changed.
func (t *Table) Reset() {
	for key, s := range t.present {
		if !s.marker && s.rej == nil {
			t.touch(s.acc.PublicKey)
		}
		t.dirtyKey(key)
	}
	t.present = map[string]slot{}
	t.records = map[wgtypes.Key][]string{}
	// Every rejection was of a value now forgotten; the keys touched
	// above make the set rules' again from the snapshot.
	t.recordRej = map[string]Rejection{}
	clear(t.setRej)
	clear(t.prefixRej)
	t.selfDirty, t.rejDirty = true, true
}

// Recall tells the table of a record it accepted before it started (this
// host's own claim): a signed one counts as a statement seen, though the
// bucket has not shown it yet.
func (t *Table) Recall(key string, value []byte, rev uint64) {
	if acc, rej := t.rules.Check(key, value, rev); rej == nil {
		t.RecallAccepted(acc)
	}
}

// RecallAccepted is Recall for a record already accepted under this table's
// rules (a local snapshot's peers, checked when it was read): its signature
// is not verified a second time, so a restart pays one verification per
// record, not two.
func (t *Table) RecallAccepted(acc Accepted) {
	if acc.Signed() {
		t.learn(acc, false)
	}
}

// parallelChecks is the batch size from which Load checks records on every
// CPU: a snapshot of thousands of signed records costs a signature
// verification each.
const parallelChecks = 64

// Load applies writes in order: Put or Delete each. The per-record rules
// (signature verification above all) run first, on every CPU for a large
// batch; they depend only on the record and on statements the table held
// before the batch.
func (t *Table) Load(writes []Write) {
	checked := make([]checkedRecord, len(writes))
	check := func(i int) {
		w := writes[i]
		if !w.Deleted && strings.HasPrefix(w.Key, PeersPrefix) {
			acc, rej := t.rules.check(w.Key, w.Value, w.Revision, t.knownRecord)
			checked[i] = checkedRecord{acc: acc, rej: rej, done: true}
		}
	}
	if len(writes) < parallelChecks {
		for i := range writes {
			check(i)
		}
	} else {
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < len(writes); i = int(next.Add(1)) - 1 {
					check(i)
				}
			})
		}
		wg.Wait()
	}
	for i, w := range writes {
		switch {
		case w.Deleted:
			t.Delete(w.Key, w.Value, w.Revision)
		case checked[i].done:
			t.putRecord(w.Key, checked[i].acc, checked[i].rej)
		default:
			t.Put(w.Key, w.Value, w.Revision)
		}
	}
}

type checkedRecord struct {
	acc  Accepted
	rej  *Rejection
	done bool
}

// Put records the value of key at revision rev. Keys outside peers.* and
// revoked.* are ignored.
func (t *Table) Put(key string, value []byte, rev uint64) {
	switch {
	case strings.HasPrefix(key, PeersPrefix):
		acc, rej := t.rules.check(key, value, rev, t.knownRecord)
		t.putRecord(key, acc, rej)
	case strings.HasPrefix(key, RevokedPrefix):
		k, err := ParseRevokedKey(key)
		if err != nil {
			return
		}
		t.clearRecordRej(key)
		if err := t.rules.RevocationCounts(k, value); err != nil {
			t.recordRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature, Detail: err.Error()}
			t.rejDirty = true
			return
		}
		if _, ok := t.revoked[k]; !ok {
			t.touch(k)
		}
		t.revoked[k] = value
	}
}

// putRecord records the value at peers.* key key, as Check judged it.
func (t *Table) putRecord(key string, acc Accepted, rej *Rejection) {
	t.unpresent(key)
	t.dirtyKey(key)
	t.present[key] = slot{acc: acc, rej: rej}
	t.selfDirty = t.selfDirty || key == t.selfEntry
	if rej != nil {
		t.recordRej[key] = *rej
		t.rejDirty = true
		return
	}
	t.records[acc.PublicKey] = append(t.records[acc.PublicKey], key)
	if acc.Signed() {
		t.learn(acc, true)
	}
	t.first(acc.PublicKey)
	t.touch(acc.PublicKey)
}

func (t *Table) clearRecordRej(key string) {
	if _, ok := t.recordRej[key]; ok {
		delete(t.recordRej, key)
		t.rejDirty = true
	}
}

// knownRecord reports whether r is, byte for byte, the signed record the
// table holds for its key: its signature was verified then.
func (t *Table) knownRecord(r Record) bool {
	pk, err := wgtypes.ParseKey(r.PublicKey)
	if err != nil {
		return false
	}
	k, ok := t.signed[pk]
	return ok && k.Record == r
}

// learn takes a signed record as its key's statement if it is the newest.
// The same statement seen again in the bucket (inBucket) moves its
// revision: where it was last written.
func (t *Table) learn(acc Accepted, inBucket bool) {
	pk := acc.PublicKey
	if acc.Seq <= t.void[pk] {
		return
	}
	if k, ok := t.signed[pk]; ok && k.Seq >= acc.Seq {
		if inBucket && k.Seq == acc.Seq && k.Key == acc.Key && k.Record == acc.Record {
			k.Revision = acc.Revision
			t.signed[pk] = k
			t.touch(pk)
		}
		return
	}
	t.first(pk)
	t.signed[pk] = acc
	t.touch(pk)
	if acc.Retires != (wgtypes.Key{}) {
		// A key rotation: the old key handed its prefix over, and none of
		// its statements counts any more.
		t.command(acc.Retires, math.MaxUint64, "its key was rotated to "+pk.String())
	}
}

// Rotate makes newKey this host's key: a key rotation, before the record
// that hands the prefix over is written (or the handover would retire
// this host's own key).
func (t *Table) Rotate(newKey wgtypes.Key) {
	old := t.selfKey
	t.selfKey = newKey
	t.touch(old)
	t.touch(newKey)
	t.selfDirty = true
}

func (t *Table) first(pk wgtypes.Key) {
	if _, ok := t.since[pk]; !ok {
		t.counter++
		t.since[pk] = t.counter
	}
}

// unpresent removes the value at key from the present-state indexes.
func (t *Table) unpresent(key string) {
	s, ok := t.present[key]
	if !ok {
		return
	}
	delete(t.present, key)
	for _, rej := range []map[string]Rejection{t.recordRej, t.setRej, t.prefixRej} {
		if _, ok := rej[key]; ok {
			delete(rej, key)
			t.rejDirty = true
		}
	}
	if s.marker || s.rej != nil {
		return
	}
	pk := s.acc.PublicKey
	if ks := slices.DeleteFunc(t.records[pk], func(k string) bool { return k == key }); len(ks) == 0 {
		delete(t.records, pk)
	} else {
		t.records[pk] = ks
	}
	t.touch(pk)
}

// Delete records a delete or purge marker at key, with body (empty for a
// plain KV delete). A signed command removes the statements it names; a
// plain marker, where no operator key is trusted, removes the record
// accepted at key. Either way the value there is gone.
func (t *Table) Delete(key string, body []byte, rev uint64) {
	if strings.HasPrefix(key, RevokedPrefix) {
		t.clearRecordRej(key)
		t.unrevoke(key, body, rev)
		return
	}
	if !strings.HasPrefix(key, PeersPrefix) {
		return
	}
	was, had := t.present[key]
	t.unpresent(key)
	t.dirtyKey(key)
	t.present[key] = slot{marker: true}
	t.selfDirty = t.selfDirty || key == t.selfEntry
	c, pk, err := t.rules.ParseCommand(key, body)
	switch {
	case err == nil:
		t.command(pk, c.Seq, "deleted by a command signed by "+signerName(c))
	case len(body) > 0:
		t.recordRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature, Detail: err.Error()}
		t.rejDirty = true
	case len(t.rules.Operators) == 0:
		// The signed record the table holds at key, if the marker follows
		// it (or the table saw nothing there since its last snapshot).
		pk, ok := t.acceptedAt(key)
		if ok && (!had || !was.marker && was.rej == nil && was.acc.PublicKey == pk && was.acc.Seq == t.signed[pk].Seq) {
			t.command(pk, t.signed[pk].Seq, "its record "+key+" was deleted")
		}
	}
}

func signerName(c Command) string {
	if c.Signer == c.PublicKey {
		return "the host's own key"
	}
	return "operator key " + c.Signer
}

// acceptedAt is the key whose signed record the table holds at bucket key
// key.
func (t *Table) acceptedAt(key string) (wgtypes.Key, bool) {
	p, err := ParseKey(key)
	if err != nil {
		return wgtypes.Key{}, false
	}
	if key == t.selfEntry {
		if k, ok := t.signed[t.selfKey]; ok && k.Key == key {
			return t.selfKey, true
		}
		return wgtypes.Key{}, false
	}
	h, ok := t.holder[p]
	if !ok {
		return wgtypes.Key{}, false
	}
	if k, ok := t.signed[h]; ok && k.Key == key {
		return h, true
	}
	return wgtypes.Key{}, false
}

// command removes pk's statements up to seq.
func (t *Table) command(pk wgtypes.Key, seq uint64, why string) {
	t.void[pk] = max(t.void[pk], seq)
	k, ok := t.signed[pk]
	removed := ok && k.Seq <= seq
	if removed {
		delete(t.signed, pk)
	}
	// This host's own command about an older record of its key (a
	// release) leaves its record standing: only removing it evicts.
	if pk == t.selfKey && removed {
		t.evicted = why
		t.selfDirty = true
	}
	t.touch(pk)
}

// unrevoke lifts the revocation at key: any marker where no operator key is
// trusted, else one carrying an operator's signed command.
func (t *Table) unrevoke(key string, body []byte, rev uint64) {
	k, err := ParseRevokedKey(key)
	if _, revoked := t.revoked[k]; err != nil || !revoked {
		return
	}
	if len(t.rules.Operators) > 0 {
		c, pk, err := t.rules.ParseCommand(key, body)
		if err != nil || pk != k || c.Signer == c.PublicKey {
			detail := "an unrevoke needs a command signed by an operator key"
			if err != nil {
				detail += ": " + err.Error()
			}
			t.recordRej[key] = Rejection{Key: key, Revision: rev, Reason: ReasonBadSignature, Detail: detail}
			t.rejDirty = true
			return
		}
	}
	delete(t.revoked, k)
	t.touch(k)
}

// dirtyKey marks the prefix a peers.* key names: its value changed, so
// whether it is a prefix_taken rejection must be decided again.
func (t *Table) dirtyKey(key string) {
	if p, err := ParseKey(key); err == nil {
		t.dirtyPrefix[p] = struct{}{}
	}
}

func (t *Table) isRevoked(pk wgtypes.Key) bool {
	_, ok := t.revoked[pk]
	return ok
}

// touch marks pk to be re-decided at the next Update.
func (t *Table) touch(pk wgtypes.Key) {
	t.dirty[pk] = struct{}{}
	if pk == t.selfKey {
		t.selfDirty = true
	}
}

// Update re-decides what changed since the last Update and reports it.
func (t *Table) Update() Delta {
	t.mu.Lock()
	defer t.mu.Unlock()
	for pk := range t.dirty {
		t.candidate(pk)
	}
	for p := range t.dirtyPrefix {
		t.givePrefix(p)
	}
	var changes []Change
	for pk := range t.dirty {
		old, had := t.peers[pk]
		ref, has := t.cand[pk]
		// This host's own prefix is never routed to a peer.
		has = has && pk != t.selfKey && ref.prefix != t.selfPrefix && t.holder[ref.prefix] == pk
		var now Accepted
		if has {
			now = t.record(pk, ref)
		}
		switch {
		case has && (!had || now != old):
			t.peers[pk] = now
		case had && !has:
			delete(t.peers, pk)
		default:
			continue
		}
		c := Change{PublicKey: pk}
		if had {
			c.Old = &old
		}
		if has {
			c.New = &now
		}
		changes = append(changes, c)
	}
	if t.selfDirty {
		t.updateSelf()
	}
	if len(t.dirty) > 64 {
		// A cleared map keeps its size, and ranging over it would cost as
		// much as the snapshot that grew it, on every later Update.
		t.dirty = map[wgtypes.Key]struct{}{}
	} else {
		clear(t.dirty)
	}
	clear(t.dirtyPrefix)
	slices.SortFunc(changes, func(a, b Change) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	if len(changes) > 0 {
		t.view = nil
	}
	if t.rejDirty {
		t.rebuildRejected()
	}
	return Delta{
		Changes: changes, Peers: len(t.peers),
		Self: t.self, SelfRejected: t.selfRej, SelfRevoked: t.selfRevoked, SelfEvicted: t.selfEvicted,
		Rejected: t.rejected,
	}
}

// candidate decides pk's record before the prefix rule, and the set-rule
// rejections of pk's present records.
func (t *Table) candidate(pk wgtypes.Key) {
	var now *Accepted
	k, fromSigned := t.signed[pk]
	if fromSigned {
		now = &k
	}
	signs := now != nil || t.void[pk] > 0
	rej := map[string]Rejection{}
	for _, m := range t.presentOf(pk) {
		a := t.present[m.key].acc
		switch {
		case pk == t.selfKey && m.key == t.selfEntry && now != nil && a.Seq == now.Seq && a.Key == now.Key:
			// This host's record, where it belongs: never a peer.
		case pk == t.selfKey && m.key != t.selfEntry:
			rej[m.key] = rejection(a, ReasonOwnKey, "public key is this host's own, which holds "+t.selfPrefix.String())
		case t.isRevoked(pk):
			rej[m.key] = rejection(a, ReasonRevoked, "public key "+pk.String()+" is revoked")
		case !a.Signed() && signs:
			rej[m.key] = rejection(a, ReasonUnsigned, "the record is not signed, and key "+pk.String()+" signs its records")
		case a.Signed() && now == nil:
			rej[m.key] = rejection(a, ReasonSuperseded, fmt.Sprintf("a command removed the records of key %s up to seq %d", pk, t.void[pk]))
		case a.Signed() && a.Seq < now.Seq:
			rej[m.key] = rejection(a, ReasonSuperseded, fmt.Sprintf("key %s has signed a newer record (seq %d at %s)", pk, now.Seq, now.Key))
		case now == nil:
			now = &a // the oldest unsigned record
		case now.Key != m.key:
			rej[m.key] = rejection(a, ReasonDuplicateKey, "public key already used by "+now.Key)
		}
	}
	if pk == t.selfKey || t.isRevoked(pk) {
		now = nil
	}
	t.setRejections(pk, rej)
	old, had := t.cand[pk]
	switch {
	case now == nil && had:
		delete(t.cand, pk)
		t.unindex(pk, old.prefix)
	case now != nil:
		ref := candRef{signed: fromSigned, key: now.Key, prefix: now.Prefix}
		if had && old == ref {
			return // the same record's place: Update compares its content
		}
		if had {
			t.unindex(pk, old.prefix)
		}
		t.cand[pk] = ref
		t.byPrefix[ref.prefix] = append(t.byPrefix[ref.prefix], pk)
		t.dirtyPrefix[ref.prefix] = struct{}{}
	}
}

func (t *Table) unindex(pk wgtypes.Key, p netip.Prefix) {
	if ks := slices.DeleteFunc(t.byPrefix[p], func(k wgtypes.Key) bool { return k == pk }); len(ks) == 0 {
		delete(t.byPrefix, p)
	} else {
		t.byPrefix[p] = ks
	}
	t.dirtyPrefix[p] = struct{}{}
}

// presentOf are pk's present valid records, oldest first.
func (t *Table) presentOf(pk wgtypes.Key) []member {
	out := make([]member, 0, len(t.records[pk]))
	for _, key := range t.records[pk] {
		out = append(out, member{key: key, rev: t.present[key].acc.Revision})
	}
	slices.SortFunc(out, member.compare)
	return out
}

// setRejections replaces the set-rule rejections of pk's records.
func (t *Table) setRejections(pk wgtypes.Key, rej map[string]Rejection) {
	for _, key := range t.setRejOfKey[pk] {
		if _, ok := rej[key]; ok {
			continue
		}
		// Another key's value may stand there by now: its own rejection
		// is that key's to decide.
		if s, ok := t.present[key]; ok && !s.marker && s.rej == nil && s.acc.PublicKey != pk {
			continue
		}
		if _, ok := t.setRej[key]; ok {
			delete(t.setRej, key)
			t.rejDirty = true
		}
	}
	keys := make([]string, 0, len(rej))
	for key, r := range rej {
		if old, ok := t.setRej[key]; !ok || old != r {
			t.setRej[key] = r
			t.rejDirty = true
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		delete(t.setRejOfKey, pk)
	} else {
		t.setRejOfKey[pk] = keys
	}
}

// givePrefix decides who holds p: its holder while that key's record is
// still there, else the contender seen first. The others' present records
// at p are rejected as prefix_taken.
func (t *Table) givePrefix(p netip.Prefix) {
	ks := t.byPrefix[p]
	h, held := t.holder[p]
	if held && !slices.Contains(ks, h) {
		held = false
	}
	if !held {
		first := true
		for _, k := range ks {
			if first || t.since[k] < t.since[h] || t.since[k] == t.since[h] && bytes.Compare(k[:], h[:]) < 0 {
				h, first = k, false
			}
		}
		if first {
			delete(t.holder, p)
		} else {
			t.holder[p] = h
		}
	}
	key := Key(p)
	old, had := t.prefixRej[key]
	for _, k := range ks {
		t.dirty[k] = struct{}{}
	}
	if s, ok := t.present[key]; ok && !s.marker && s.rej == nil && len(ks) > 0 && s.acc.PublicKey != h {
		if slices.Contains(ks, s.acc.PublicKey) {
			holder := t.record(h, t.cand[h])
			r := rejection(s.acc, ReasonPrefixTaken, "prefix "+p.String()+" is held by "+holder.Name+" (public key "+h.String()+")")
			if !had || old != r {
				t.prefixRej[key] = r
				t.rejDirty = true
			}
			return
		}
	}
	if had {
		delete(t.prefixRej, key)
		t.rejDirty = true
	}
}

// updateSelf re-reads the entry at this host's prefix.
func (t *Table) updateSelf() {
	var self *Accepted
	var selfRej *Rejection
	if s, ok := t.present[t.selfEntry]; ok && !s.marker {
		switch {
		case s.rej != nil:
			r := *s.rej
			selfRej = &r
		case s.acc.PublicKey == t.selfKey:
			if r, ok := t.setRej[t.selfEntry]; ok {
				selfRej = &r // an older record of ours, or an unsigned one
			} else {
				a := s.acc
				self = &a
			}
		default:
			a := s.acc
			self = &a
		}
	}
	t.self, t.selfRej, t.selfRevoked, t.selfEvicted = self, selfRej, t.isRevoked(t.selfKey), t.evicted
	t.selfDirty = false
	t.view = nil
}

func (t *Table) rebuildRejected() {
	rej := make([]Rejection, 0, len(t.recordRej)+len(t.setRej)+len(t.prefixRej))
	rej = slices.AppendSeq(rej, maps.Values(t.recordRej))
	rej = slices.AppendSeq(rej, maps.Values(t.setRej))
	for key, r := range t.prefixRej {
		if _, ok := t.setRej[key]; !ok {
			rej = append(rej, r)
		}
	}
	if len(rej) == 0 {
		rej = nil
	}
	slices.SortFunc(rej, func(a, b Rejection) int { return strings.Compare(a.Key, b.Key) })
	if !slices.Equal(rej, t.rejected) {
		t.rejected = rej
		t.view = nil
	}
	t.rejDirty = false
}

func rejection(a Accepted, r Reason, detail string) Rejection {
	return Rejection{Key: a.Key, Revision: a.Revision, Reason: r, Detail: detail}
}
