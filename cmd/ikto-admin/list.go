package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/mesh"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// Row states.
const (
	stateValid    = "valid"
	stateRejected = "rejected"
	stateRevoked  = "revoked"
)

// row is one line of list: a peers.* record as agents would judge it, or a
// revocation whose record is gone (an evicted host). The JSON is a contract
// for scripts: the record fields keep their docs/contract.md §4 names.
type row struct {
	peer.Record
	Key      string     `json:"key"`
	Revision uint64     `json:"revision"`
	Created  *time.Time `json:"created"`
	State    string     `json:"state"`
	Reason   string     `json:"reason"`
	Detail   string     `json:"detail"`
	LastSeen *time.Time `json:"last_seen"`
	Online   bool       `json:"online"`
	Version  string     `json:"agent_version,omitempty"`
	// AlsoAt are the prefixes of the other records that carry this row's
	// public key: one of them is a copy of another host's key.
	AlsoAt []string `json:"also_at,omitempty"`
	// Duplicate is, while the host is online, the other live agent its
	// last heartbeat says runs with its key (a cloned host).
	Duplicate *bucket.Duplicate `json:"duplicate,omitempty"`
}

func (a *app) listCommand() *cobra.Command {
	var rf ruleFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every peer record in the bucket: valid, rejected (and why) or revoked, with liveness",
		Long: `list reads every record in the bucket and judges it as an agent would:
valid, rejected (with the rule it breaks) or revoked. Evicted hosts whose
record is gone show as revoked rows. Liveness comes from the heartbeats:
online, when the host was last seen, or never. Below the table, each record
that is not valid gets a line saying why, and a public key found at more
than one prefix is pointed out (one record is a copy of another host's key).
-o json prints the rows for scripts.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withRows(cmd, rf, func(_ context.Context, _ *bucket.Mesh, rows []row) error {
				return a.show(rows, func(w io.Writer) error { return writeListTable(w, rows, a.now()) })
			})
		},
	}
	rf.bind(cmd)
	return cmd
}

// ruleFlags are the flags that say how records are judged when -c does not.
type ruleFlags struct {
	meshCIDR     string
	subnetPrefix int
}

func (rf *ruleFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&rf.meshCIDR, "mesh-cidr", config.DefaultMeshCIDR, "the mesh, to judge records by (default: mesh_cidr of -c)")
	cmd.Flags().IntVar(&rf.subnetPrefix, "subnet-prefix", config.DefaultSubnetPrefix, "every host's prefix length (default: subnet_prefix of -c)")
}

// withRows runs f with the mesh open and every record judged as an agent
// would. The rules come from -c or the flags, checked before going to NATS.
func (a *app) withRows(cmd *cobra.Command, rf ruleFlags, f func(ctx context.Context, m *bucket.Mesh, rows []row) error) error {
	if err := a.loadConfig(cmd); err != nil {
		return err
	}
	rules, err := a.rules(cmd, rf.meshCIDR, rf.subnetPrefix)
	if err != nil {
		return err
	}
	return a.withMesh(cmd, func(ctx context.Context, m *bucket.Mesh) error {
		rows, err := a.collectRows(ctx, m, rules)
		if err != nil {
			return err
		}
		return f(ctx, m, rows)
	})
}

// rules are the acceptance rules: from -c unless the flags say otherwise.
func (a *app) rules(cmd *cobra.Command, meshCIDR string, bits int) (peer.Rules, error) {
	if a.cfg != nil {
		if !cmd.Flags().Changed("mesh-cidr") {
			meshCIDR = a.cfg.MeshCIDR
		}
		if !cmd.Flags().Changed("subnet-prefix") {
			bits = a.cfg.SubnetPrefix
		}
	}
	mesh, err := netip.ParsePrefix(meshCIDR)
	if err != nil || mesh.Masked() != mesh {
		return peer.Rules{}, cli.Usagef("--mesh-cidr %q is not a canonical CIDR prefix (e.g. fd10::/16)", meshCIDR)
	}
	if bits <= mesh.Bits() || bits > mesh.Addr().BitLen() {
		return peer.Rules{}, cli.Usagef("--subnet-prefix %d must be longer than the mesh's /%d and at most /%d", bits, mesh.Bits(), mesh.Addr().BitLen())
	}
	rules := peer.Rules{Mesh: mesh, Bits: bits, Bucket: a.natsKV}
	if a.cfg != nil {
		for i, k := range a.cfg.OperatorKeys {
			op, err := peer.ParseOperatorKey(k)
			if err != nil {
				return peer.Rules{}, fmt.Errorf("%s: operator_keys[%d]: %w", a.configPath, i, err)
			}
			rules.Operators = append(rules.Operators, op)
		}
		rules.Require = a.cfg.MembershipSignatures == "require"
	}
	return rules, nil
}

// collectRows reads records, revocations and heartbeats.
func (a *app) collectRows(ctx context.Context, m *bucket.Mesh, rules peer.Rules) ([]row, error) {
	entries, err := m.Records(ctx)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	revs, err := m.Revocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	hbs, err := m.Heartbeats(ctx)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	return buildRows(entries, revs, hbs, rules, a.now()), nil
}

// buildRows judges every record as an agent would — the per-record rules and
// the set rules of peer.Table, with no host of its own — and adds a row for
// each revoked key no record carries any more.
func buildRows(entries []bucket.Entry, revs map[wgtypes.Key]peer.Revocation, hbs map[netip.Prefix]bucket.Heartbeat, rules peer.Rules, now time.Time) []row {
	table := peer.NewTable(rules, wgtypes.Key{}, netip.Prefix{})
	for _, e := range entries {
		table.Put(e.Key, e.Value, e.Revision)
	}
	for k, rv := range revs {
		v, _ := json.Marshal(rv)
		table.Put(peer.RevokedKey(k), v, 0)
	}
	rejected := map[string]peer.Rejection{}
	for _, r := range table.Resolve().Rejected {
		rejected[r.Key] = r
	}

	rows := make([]row, 0, len(entries)+len(revs))
	carried := map[string]bool{}
	for _, e := range entries {
		r := row{Key: e.Key, Revision: e.Revision, State: stateValid}
		r.Record, _ = peer.DecodeRecord(e.Value) // a malformed value shows as rejected, fields empty
		if !e.Created.IsZero() {
			created := e.Created.UTC()
			r.Created = &created
		}
		if rej, ok := rejected[e.Key]; ok {
			r.State, r.Reason, r.Detail = stateRejected, string(rej.Reason), rej.Detail
			if rej.Reason == peer.ReasonRevoked {
				r.State = stateRevoked
			}
		}
		carried[r.PublicKey] = true
		r.setLiveness(hbs, now)
		rows = append(rows, r)
	}
	markSharedKeys(rows)
	for k, rv := range revs {
		if carried[k.String()] {
			continue
		}
		r := row{
			Record: peer.Record{Name: rv.Name, PublicKey: k.String(), AllowedIP: rv.AllowedIP},
			Key:    peer.RevokedKey(k), State: stateRevoked, Reason: string(peer.ReasonRevoked),
			Detail: "evicted; no record left",
		}
		if !rv.RevokedAt.IsZero() {
			r.Detail = "evicted " + rv.RevokedAt.UTC().Format(time.RFC3339) + "; no record left"
		}
		r.setLiveness(hbs, now)
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(x, y row) int {
		px, _ := netip.ParsePrefix(x.AllowedIP)
		py, _ := netip.ParsePrefix(y.AllowedIP)
		if c := px.Addr().Compare(py.Addr()); c != 0 {
			return c
		}
		if c := cmp.Compare(px.Bits(), py.Bits()); c != 0 {
			return c
		}
		return cmp.Compare(x.Key, y.Key)
	})
	return rows
}

// markSharedKeys sets AlsoAt on the rows whose public key other rows carry
// too.
func markSharedKeys(rows []row) {
	recs := make([]peer.Record, len(rows))
	for i, r := range rows {
		recs[i] = r.Record
	}
	for i, at := range alsoAt(recs) {
		rows[i].AlsoAt = at
	}
}

// alsoAt is, for each of recs, the allowed_ip of the other records that
// carry its public key: a key in more than one record means one of them is
// a copy of another host's key.
func alsoAt(recs []peer.Record) [][]string {
	byKey := map[string][]int{}
	for i, r := range recs {
		if r.PublicKey != "" {
			byKey[r.PublicKey] = append(byKey[r.PublicKey], i)
		}
	}
	out := make([][]string, len(recs))
	for i, r := range recs {
		for _, j := range byKey[r.PublicKey] {
			if j != i {
				out[i] = append(out[i], recs[j].AllowedIP)
			}
		}
	}
	return out
}

// setLiveness takes the heartbeat at the row's prefix, if the same public
// key wrote it: a former holder's heartbeat says nothing about this one.
func (r *row) setLiveness(hbs map[netip.Prefix]bucket.Heartbeat, now time.Time) {
	p, err := netip.ParsePrefix(r.AllowedIP)
	if err != nil {
		return
	}
	hb, ok := hbs[p.Masked()]
	if !ok || hb.PublicKey != r.PublicKey || hb.At.IsZero() {
		return
	}
	at := hb.At.UTC()
	r.LastSeen = &at
	r.Online = now.Sub(at) < mesh.OnlineWithin
	r.Version = hb.Version
	if r.Online {
		r.Duplicate = hb.Duplicate
	}
}

func (r row) liveness(now time.Time) string {
	switch {
	case r.Online:
		return "online"
	case r.LastSeen == nil:
		return "never"
	}
	return "last seen " + ago(now.Sub(*r.LastSeen)) + " ago"
}

func (r row) stateText() string {
	s := r.State
	if r.State == stateRejected {
		s += ": " + r.Reason
	}
	if len(r.AlsoAt) > 0 {
		s += ", key shared"
	}
	if r.Duplicate != nil {
		s += ", running twice"
	}
	return s
}

func (r row) endpoint() string {
	if r.AdvertiseAddress == "" {
		return ""
	}
	if a, err := netip.ParseAddr(r.AdvertiseAddress); err == nil {
		return netip.AddrPortFrom(a, uint16(r.WGPort)).String()
	}
	return r.AdvertiseAddress + ":" + strconv.Itoa(r.WGPort)
}

// writeListTable prints aligned columns, then, in a second table, why each
// record that is not valid is rejected or revoked (the detail is too long
// for a column of the first), then the keys found at more than one prefix.
func writeListTable(w io.Writer, rows []row, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPREFIX\tENDPOINT\tPUBLIC-KEY\tSTATE\tLIVENESS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(r.Name), dash(r.AllowedIP), dash(r.endpoint()), dash(r.PublicKey), r.stateText(), r.liveness(now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeWhyTable(w, rows); err != nil {
		return err
	}
	for _, r := range rows {
		if len(r.AlsoAt) > 0 {
			fmt.Fprintf(w, "%s (%s): its public key also has a record at %s; one is a copy of another host's key (ikto-admin evict PREFIX --keep-key removes a copy)\n",
				r.Key, dash(r.AllowedIP), strings.Join(r.AlsoAt, ", "))
		}
	}
	return nil
}

// writeWhyTable prints, after a blank line, one aligned row per record that
// is not valid: its bucket key, state, revision ("-" for a revocation whose
// record is gone) and why. It prints nothing when every record is valid.
func writeWhyTable(w io.Writer, rows []row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, r := range rows {
		if r.State == stateValid {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "KEY\tSTATE\tREVISION\tWHY")
			header = true
		}
		rev := "-"
		if r.Revision != 0 {
			rev = strconv.FormatUint(r.Revision, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", dash(r.Key), r.State, rev, dash(r.Detail))
	}
	return tw.Flush()
}

// show writes v as -o asks: JSON, or as table writes it for a person.
func (a *app) show(v any, table func(io.Writer) error) error {
	if a.output == "json" {
		return writeJSON(a.stdout, v)
	}
	return table(a.stdout)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// dash is s for a table cell: "-" when empty, and, because records are
// written by anyone with bucket access, with control characters (terminal
// escapes, newlines, tabs that would break the columns) shown quoted as Go
// escapes instead of reaching the operator's terminal.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// ago is a duration as an operator reads it: 45s, 5m, 3h, 2d.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}
