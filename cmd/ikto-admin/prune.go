package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// pruneOptions are prune's flags.
type pruneOptions struct {
	offlineFor    time.Duration
	dryRun        bool
	includeSilent bool
	// op signs the evictions, if it signs.
	op bucket.Operator
	rf ruleFlags
}

// Actions of prune on one host, as -o json reports them.
const (
	pruneWouldEvict = "would_evict" // --dry-run
	pruneEvicted    = "evicted"
	pruneFailed     = "failed"
	pruneKept       = "kept" // no heartbeat, and no --include-silent
)

// prunedHost is one host prune evicted, would evict, failed to evict, or
// kept because it has no heartbeat.
type prunedHost struct {
	Key       string     `json:"key"`
	Revision  uint64     `json:"revision"`
	Name      string     `json:"name"`
	AllowedIP string     `json:"allowed_ip"`
	PublicKey string     `json:"public_key"`
	LastSeen  *time.Time `json:"last_seen"` // nil: no heartbeat in the last 24h
	Created   time.Time  `json:"created"`   // when the record was written
	Why       string     `json:"why"`
	Action    string     `json:"action"`
	Error     string     `json:"error,omitempty"`
}

// pruneReport is prune's -o json output: every host it acted on or kept.
type pruneReport struct {
	OfflineFor    string       `json:"offline_for"`
	DryRun        bool         `json:"dry_run"`
	IncludeSilent bool         `json:"include_silent"`
	Hosts         []prunedHost `json:"hosts"`
}

// pruneHostsCommand is `ikto-admin prune`. A host without a heartbeat is
// evicted only with --include-silent: ikto 0.3.0 agents send none, and one
// that shares the bucket must not be taken for dead.
func (a *app) pruneHostsCommand() *cobra.Command {
	var opt pruneOptions
	cmd := &cobra.Command{
		Use:   "prune --offline-for DURATION",
		Short: "Evict every host whose last heartbeat is older than DURATION",
		Long: `prune evicts every host whose last heartbeat is older than --offline-for.

A host with no heartbeat is kept and named: ikto 0.3.0 agents send none, and
a newer agent's heartbeat expires after ` + ago(bucket.HeartbeatMaxAge) + ` of silence. With
--include-silent, such a host is evicted too when its record was written
longer ago than --offline-for. Nothing is evicted automatically: run it when
you mean it, --dry-run first.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.offlineFor <= 0 {
				return cli.Usagef("prune needs --offline-for DURATION (e.g. 24h), longer than zero")
			}
			return a.withOperator(cmd, opt.rf, func(ctx context.Context, m *bucket.Mesh, op bucket.Operator) error {
				opt.op = op
				return a.pruneHosts(ctx, m, opt)
			})
		},
	}
	cmd.Flags().DurationVar(&opt.offlineFor, "offline-for", 0, "evict hosts silent for longer than this (e.g. 30m, 24h)")
	cmd.Flags().BoolVar(&opt.dryRun, "dry-run", false, "show what would be evicted and change nothing")
	cmd.Flags().BoolVar(&opt.includeSilent, "include-silent", false, "also evict hosts without any heartbeat (ikto 0.3.0 agents, agents silent for over "+ago(bucket.HeartbeatMaxAge)+") by their record's age")
	opt.rf.bind(cmd)
	return cmd
}

// pruneHosts evicts the silent hosts one by one; a failed eviction does not
// stop the others, and the command fails at the end naming them.
func (a *app) pruneHosts(ctx context.Context, m *bucket.Mesh, opt pruneOptions) error {
	candidates, err := a.pruneCandidates(ctx, m, opt)
	if err != nil {
		return err
	}
	report := pruneReport{OfflineFor: opt.offlineFor.String(), DryRun: opt.dryRun, IncludeSilent: opt.includeSilent, Hosts: []prunedHost{}}
	text := a.output != "json"
	var failed []string
	evict := 0
	for _, c := range candidates {
		h := c.host
		switch {
		case len(c.shared) > 0:
			h.Action = pruneKept
			h.Why += "; its public key also has a record at " + strings.Join(c.shared, ", ")
			if text {
				fmt.Fprintf(a.stdout, "kept %s: %s (one is a copy of another host's key: ikto-admin evict with --keep-key or --revoke-key decides)\n", describe(c.holder), h.Why)
			}
		case c.keep:
			h.Action = pruneKept
			if text {
				fmt.Fprintf(a.stdout, "kept %s: %s; --include-silent evicts it\n", describe(c.holder), h.Why)
			}
		case opt.dryRun:
			h.Action, evict = pruneWouldEvict, evict+1
			if text {
				fmt.Fprintf(a.stdout, "would evict %s: %s\n", describe(c.holder), h.Why)
			}
		default:
			evict++
			if text {
				fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(c.holder), h.Why)
			}
			h.Action = pruneEvicted
			if err := m.Evict(ctx, c.holder, opt.op); err != nil {
				if err = m.Explain(err); errors.Is(err, bucket.ErrPermission) {
					return err // every other eviction would be refused alike
				}
				fmt.Fprintf(a.stderr, "ikto-admin: %v\n", err)
				h.Action, h.Error = pruneFailed, err.Error()
				failed = append(failed, h.Key)
			}
		}
		report.Hosts = append(report.Hosts, h)
	}
	if text {
		switch {
		case evict == 0:
			fmt.Fprintf(a.stdout, "no host has been silent for longer than %s\n", opt.offlineFor)
		case opt.dryRun:
			fmt.Fprintln(a.stdout, "(dry run: nothing changed)")
		case len(failed) == 0:
			fmt.Fprintf(a.stdout, "evicted %d hosts (%s)\n", evict, rejoinHint)
		}
	} else if err := writeJSON(a.stdout, report); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("prune: %d of %d evictions failed (%s); run prune again", len(failed), evict, strings.Join(failed, ", "))
	}
	return nil
}

// pruneCandidate is a host silent for longer than --offline-for: to evict,
// or to keep because it never sent a heartbeat we can see.
type pruneCandidate struct {
	holder bucket.Holder
	host   prunedHost
	keep   bool
	// shared are the prefixes of other records of the same public key:
	// one of them is a copy, and revoking the key could cut off the host
	// that really holds it, so prune leaves the choice to evict.
	shared []string
}

// pruneCandidates reads the records and heartbeats and judges each host.
func (a *app) pruneCandidates(ctx context.Context, m *bucket.Mesh, opt pruneOptions) ([]pruneCandidate, error) {
	entries, err := m.Records(ctx)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	hbs, err := m.Heartbeats(ctx)
	if err != nil {
		return nil, fmt.Errorf("NATS server %s: %w", m.Servers, err)
	}
	now := a.now()
	var (
		out  []pruneCandidate
		recs []peer.Record
		at   []int // index in recs of each of out
	)
	for _, e := range entries {
		c, ok := judgeSilence(e, hbs, now, opt)
		recs = append(recs, c.holder.Record)
		if ok {
			out, at = append(out, c), append(at, len(recs)-1)
		}
	}
	shared := alsoAt(recs)
	for i := range out {
		out[i].shared = shared[at[i]]
	}
	return out, nil
}

// judgeSilence decides about one record: ok is false for a host that has
// not been silent for longer than opt.offlineFor.
func judgeSilence(e bucket.Entry, hbs map[netip.Prefix]bucket.Heartbeat, now time.Time, opt pruneOptions) (pruneCandidate, bool) {
	h := bucket.Holder{Key: e.Key, Revision: e.Revision}
	h.Record, _ = peer.DecodeRecord(e.Value) // garbage has no heartbeat: a silent host
	h.Prefix, _ = netip.ParsePrefix(h.Record.AllowedIP)
	r := row{Record: h.Record}
	r.setLiveness(hbs, now)
	c := pruneCandidate{holder: h, host: prunedHost{
		Key: h.Key, Revision: h.Revision, Name: h.Record.Name, AllowedIP: h.Record.AllowedIP,
		PublicKey: h.Record.PublicKey, LastSeen: r.LastSeen, Created: e.Created.UTC(),
	}}
	written := now.Sub(e.Created)
	switch {
	case r.LastSeen != nil && now.Sub(*r.LastSeen) > opt.offlineFor:
		c.host.Why = "last seen " + ago(now.Sub(*r.LastSeen)) + " ago"
	case r.LastSeen == nil && written > opt.offlineFor:
		c.host.Why = "no heartbeat, record written " + ago(written) + " ago"
		c.keep = !opt.includeSilent
		if c.keep {
			c.host.Why = "no heartbeat (ikto 0.3.0 agents send none), record written " + ago(written) + " ago"
		}
	default:
		return c, false
	}
	return c, true
}
