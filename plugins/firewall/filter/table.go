package filter

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
)

// Count is one named counter's value.
type Count struct {
	Packets, Bytes uint64
}

// install replaces the table (whether or not one exists) with a fresh one
// holding carried's members and the counters' values the old one had, all
// in one transaction: packets see the old table or the new one, never a
// moment without either.
func (r ruleset) install(conn *nftables.Conn, carried members) error {
	counts, err := readCounts(conn, r.table)
	if err != nil {
		return err
	}
	t := r.nftTable()
	// Adding an existing table is a no-op, so the delete after it cannot fail
	// for want of a table; the kernel applies all three or none.
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	for _, name := range []string{CounterWGPortDrops, CounterPrefixDrops} {
		c := counts[name]
		conn.AddObj(&nftables.CounterObj{Table: t, Name: name, Packets: c.Packets, Bytes: c.Bytes})
	}
	sets := map[string]*nftables.Set{}
	for _, spec := range r.sets() {
		s := spec.nftSet(t)
		if err := conn.AddSet(s, elements(carried[spec.name])); err != nil {
			return fmt.Errorf("install table inet %s: set %s: %w", r.table, spec.name, err)
		}
		sets[spec.name] = s
	}
	input, forward := chains(t)
	conn.AddChain(input)
	conn.AddChain(forward)
	// rulesPerChain counts these.
	conn.AddRule(r.wgPortRule(input, sets[SetEndpoints4], true))
	conn.AddRule(r.wgPortRule(input, sets[SetEndpoints6], false))
	conn.AddRule(r.prefixRule(input, sets[SetPrefixes]))
	conn.AddRule(r.prefixRule(forward, sets[SetPrefixes]))
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("install table inet %s: %w", r.table, err)
	}
	return nil
}

// rulesPerChain is how many rules install writes into each chain.
var rulesPerChain = map[string]int{ChainInput: 3, ChainForward: 1}

// rulesIntact tells whether both chains still hold the hook's rules, by
// count: "nft flush table" empties the chains but keeps the sets, and Apply
// must notice that the drops are gone.
func (r ruleset) rulesIntact(conn *nftables.Conn) (bool, error) {
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list chains of table inet %s: %w", r.table, err)
	}
	found := 0
	for _, c := range chains {
		want, ours := rulesPerChain[c.Name]
		if !ours || c.Table == nil || c.Table.Name != r.table {
			continue
		}
		rules, err := conn.GetRules(r.nftTable(), c)
		if err != nil {
			return false, fmt.Errorf("list rules of chain %s of table inet %s: %w", c.Name, r.table, err)
		}
		if len(rules) != want {
			return false, nil
		}
		found++
	}
	return found == len(rulesPerChain), nil
}

// readMembers reads the sets back from the kernel. intact is false when the
// table is missing, or a set is missing, of another shape or unreadable as
// the hook writes it; what could be read is returned all the same.
func (r ruleset) readMembers(conn *nftables.Conn) (m members, intact bool, err error) {
	t := r.nftTable()
	m, intact = members{}, true
	for _, spec := range r.sets() {
		s, err := conn.GetSetByName(t, spec.name)
		if errors.Is(err, os.ErrNotExist) {
			intact = false
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("read set %s of table inet %s: %w", spec.name, r.table, err)
		}
		if !spec.matches(s) {
			intact = false
			continue
		}
		els, err := conn.GetSetElements(s)
		if err != nil {
			return nil, false, fmt.Errorf("read elements of set %s of table inet %s: %w", spec.name, r.table, err)
		}
		items, err := parseItems(els, spec.interval)
		if err != nil {
			intact = false
			continue
		}
		m[spec.name] = items
	}
	return m, intact, nil
}

// readCounts returns the table's named counters; none when there is no table.
func readCounts(conn *nftables.Conn, table string) (map[string]Count, error) {
	objs, err := conn.GetObjects(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Count{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read counters of table inet %s: %w", table, err)
	}
	counts := map[string]Count{}
	for _, o := range objs {
		if c, ok := o.(*nftables.CounterObj); ok {
			counts[c.Name] = Count{Packets: c.Packets, Bytes: c.Bytes}
		}
	}
	return counts, nil
}

// writeDiff applies the difference to the sets in one transaction:
// deletions first, so an interval that is split or merged never overlaps
// itself, and no set is ever flushed.
func (r ruleset) writeDiff(conn *nftables.Conn, diff map[string]setDiff) error {
	t := r.nftTable()
	for _, spec := range r.sets() {
		d, ok := diff[spec.name]
		if !ok || len(d.del) == 0 {
			continue
		}
		if err := conn.SetDeleteElements(spec.nftSet(t), elements(d.del)); err != nil {
			return fmt.Errorf("update set %s of table inet %s: %w", spec.name, r.table, err)
		}
	}
	for _, spec := range r.sets() {
		d, ok := diff[spec.name]
		if !ok || len(d.add) == 0 {
			continue
		}
		if err := conn.SetAddElements(spec.nftSet(t), elements(d.add)); err != nil {
			return fmt.Errorf("update set %s of table inet %s: %w", spec.name, r.table, err)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("update sets of table inet %s: %w", r.table, err)
	}
	return nil
}

// removeTable deletes the table if there is one.
func removeTable(conn *nftables.Conn, table string) error {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	conn.AddTable(t) // so that a missing table is not an error
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", table, err)
	}
	return nil
}
