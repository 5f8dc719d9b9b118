package filter_test

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/ikto-mesh/ikto/plugins/firewall/internal/nstest"
)

// What the tests read back goes through the nftables library straight from
// the kernel, written out independently of the package's own parsing.

func nftConn(t *testing.T, ns *nstest.NS) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatalf("nftables connection: %v", err)
	}
	return c
}

func inet(name string) *nftables.Table {
	return &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
}

// readSets returns every set of the table with its elements, an interval's
// end written as "ADDR end", sorted.
func readSets(t *testing.T, c *nftables.Conn, table string) map[string][]string {
	t.Helper()
	sets, err := c.GetSets(inet(table))
	if err != nil {
		t.Fatalf("list sets of inet %s: %v", table, err)
	}
	out := map[string][]string{}
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("read set %s: %v", s.Name, err)
		}
		out[s.Name] = elementStrings(els)
	}
	return out
}

func elementStrings(els []nftables.SetElement) []string {
	list := []string{}
	for _, el := range els {
		list = append(list, elementString(el))
	}
	slices.Sort(list)
	return list
}

func elementString(el nftables.SetElement) string {
	a, ok := netip.AddrFromSlice(el.Key)
	s := a.String()
	if !ok {
		s = fmt.Sprintf("%x", el.Key)
	}
	if el.IntervalEnd {
		s += " end"
	}
	return s
}

// describeSets returns each set's name with its key type and flags.
func describeSets(t *testing.T, c *nftables.Conn, table string) []string {
	t.Helper()
	sets, err := c.GetSets(inet(table))
	if err != nil {
		t.Fatalf("list sets of inet %s: %v", table, err)
	}
	var out []string
	for _, s := range sets {
		d := s.Name + " " + s.KeyType.Name
		if s.Interval {
			d += " interval"
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// describeChains returns each base chain of the table as
// "name hook/priority/policy" followed by its rules.
func describeChains(t *testing.T, c *nftables.Conn, table string) map[string][]string {
	t.Helper()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list chains: %v", err)
	}
	out := map[string][]string{}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		head := "regular chain"
		if ch.Hooknum != nil && ch.Policy != nil && ch.Priority != nil {
			head = fmt.Sprintf("type %s hook %d priority %d policy %d", ch.Type, *ch.Hooknum, *ch.Priority, *ch.Policy)
		}
		rules, err := c.GetRules(inet(table), ch)
		if err != nil {
			t.Fatalf("list rules of %s: %v", ch.Name, err)
		}
		lines := []string{head}
		for _, r := range rules {
			lines = append(lines, describeRule(r.Exprs))
		}
		out[ch.Name] = lines
	}
	return out
}

// describeRule writes a rule's expressions in a short nft-like form.
func describeRule(exprs []expr.Any) string {
	var words []string
	loaded := ""
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			loaded = map[expr.MetaKey]string{
				expr.MetaKeyNFPROTO: "nfproto", expr.MetaKeyL4PROTO: "l4proto", expr.MetaKeyIIFNAME: "iifname",
			}[e.Key]
		case *expr.Payload:
			base := map[expr.PayloadBase]string{expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[e.Base]
			loaded = fmt.Sprintf("%s[%d:%d]", base, e.Offset, e.Len)
		case *expr.Bitwise:
			ones := 0
			for _, b := range e.Mask {
				ones += bits.OnesCount8(b)
			}
			loaded += fmt.Sprintf("/%d", ones)
		case *expr.Cmp:
			words = append(words, loaded+"=="+cmpValue(loaded, e.Data))
		case *expr.Lookup:
			op := "@"
			if e.Invert {
				op = "!@"
			}
			words = append(words, loaded+op+e.SetName)
		case *expr.Objref:
			words = append(words, "counter:"+e.Name)
		case *expr.Verdict:
			words = append(words, map[expr.VerdictKind]string{expr.VerdictDrop: "drop", expr.VerdictAccept: "accept"}[e.Kind])
		default:
			words = append(words, fmt.Sprintf("%T", e))
		}
	}
	return strings.Join(words, " ")
}

func cmpValue(loaded string, data []byte) string {
	switch {
	case loaded == "nfproto" && len(data) == 1:
		return map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[data[0]]
	case loaded == "l4proto" && len(data) == 1 && data[0] == unix.IPPROTO_UDP:
		return "udp"
	case loaded == "iifname":
		return strings.TrimRight(string(data), "\x00")
	case len(data) == 2:
		return fmt.Sprint(binary.BigEndian.Uint16(data))
	}
	if a, ok := netip.AddrFromSlice(data); ok {
		return a.String()
	}
	return fmt.Sprintf("%x", data)
}

// readCounter returns a named counter's packets.
func readCounter(t *testing.T, c *nftables.Conn, table, name string) uint64 {
	t.Helper()
	objs, err := c.GetObjects(inet(table))
	if err != nil {
		t.Fatalf("read counters of inet %s: %v", table, err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok && co.Name == name {
			return co.Packets
		}
	}
	t.Fatalf("no counter %s in inet %s", name, table)
	return 0
}

// tableExists reports whether the table is there.
func tableExists(t *testing.T, c *nftables.Conn, table string) bool {
	t.Helper()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	for _, tb := range tables {
		if tb.Name == table {
			return true
		}
	}
	return false
}

// transactions watches the namespace's nftables changes, one entry per
// committed transaction, each change written as "newsetelem ADDR" etc.
type transactions struct {
	ch <-chan *nftables.MonitorEvents
}

func watchTransactions(t *testing.T, c *nftables.Conn) *transactions {
	t.Helper()
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	ch, err := c.AddGenerationalMonitor(m)
	if err != nil {
		t.Fatalf("nftables monitor: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return &transactions{ch: ch}
}

// next returns the next transaction's changes, sorted.
func (tr *transactions) next(t *testing.T) []string {
	t.Helper()
	select {
	case gen, ok := <-tr.ch:
		if !ok {
			t.Fatal("nftables monitor closed")
		}
		var out []string
		for _, ev := range gen.Changes {
			if ev.Error != nil {
				t.Fatalf("monitor event: %v", ev.Error)
			}
			out = append(out, describeEvent(ev)...)
		}
		slices.Sort(out)
		return out
	case <-time.After(10 * time.Second):
		t.Fatal("no nftables transaction within 10s")
		return nil
	}
}

func describeEvent(ev *nftables.MonitorEvent) []string {
	switch ev.Type {
	case nftables.MonitorEventTypeNewSetElem, nftables.MonitorEventTypeDelSetElem:
		op := "newsetelem"
		if ev.Type == nftables.MonitorEventTypeDelSetElem {
			op = "delsetelem"
		}
		var out []string
		for _, el := range ev.Data.([]nftables.SetElement) {
			out = append(out, op+" "+elementString(el))
		}
		return out
	case nftables.MonitorEventTypeNewTable:
		return []string{"newtable"}
	case nftables.MonitorEventTypeDelTable:
		return []string{"deltable"}
	case nftables.MonitorEventTypeNewSet:
		return []string{"newset"}
	case nftables.MonitorEventTypeDelSet:
		return []string{"delset"}
	case nftables.MonitorEventTypeNewChain, nftables.MonitorEventTypeDelChain:
		return []string{"chain"}
	case nftables.MonitorEventTypeNewRule, nftables.MonitorEventTypeDelRule:
		return []string{"rule"}
	default:
		return []string{fmt.Sprintf("event %d", ev.Type)}
	}
}
