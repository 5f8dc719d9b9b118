package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/mesh"
)

// catchUp is how long after the bucket's last change a host's heartbeat may
// still show an older revision: the change reaches every agent in
// milliseconds, the heartbeat that reports it may be a beat later.
const catchUp = time.Second

// health is the fleet in one view (ikto-admin health -o json).
type health struct {
	OK       bool   `json:"ok"`
	Bucket   string `json:"bucket"`
	Revision uint64 `json:"revision"`
	Hosts    int    `json:"hosts"`
	// Behind are hosts whose last heartbeat, written after the bucket's
	// last change, reports an older applied revision.
	Behind []behindHost `json:"behind"`
	// Unreachable are pairs where one host sends to the other and hears
	// nothing back.
	Unreachable []unreachablePair `json:"unreachable"`
	// Silent are hosts whose heartbeats stopped.
	Silent []silentHost `json:"silent"`
	// Duplicate are hosts whose key two live agents run with (a cloned
	// host, or one config on two hosts), as their heartbeats say.
	Duplicate []duplicateHost `json:"duplicate"`
	// Settings are what is wrong with the buckets' settings, each naming
	// its fix (bucket.Problems).
	Settings []string `json:"settings"`
	// Notes are what else init-bucket would change (a bucket that does
	// not republish): worth doing, and no harm to the fleet meanwhile.
	Notes []string `json:"notes"`
	// NoHeartbeat are hosts that never wrote one (ikto 0.3.0 agents): they
	// cannot be judged, and do not count against health.
	NoHeartbeat []string `json:"no_heartbeat"`
}

type behindHost struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Applied   uint64 `json:"applied"`
}

type unreachablePair struct {
	From    string `json:"from"`
	To      string `json:"to"`
	FromKey string `json:"from_key"`
	ToKey   string `json:"to_key"`
}

type silentHost struct {
	Name          string    `json:"name"`
	PublicKey     string    `json:"public_key"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// duplicateHost is a host's key run by two agents: the one that wrote its
// last heartbeat, and the other it has seen since Since.
type duplicateHost struct {
	Name      string        `json:"name"`
	PublicKey string        `json:"public_key"`
	Writer    bucket.Writer `json:"writer"`
	Other     bucket.Writer `json:"other"`
	Since     time.Time     `json:"since"`
}

// duplicateFix is what an operator does about a duplicate.
const duplicateFix = "a copy must get a key and prefix of its own: on the copy, stop ikto-agent, move its private key away and run ikto-init again"

func (a *app) healthCommand() *cobra.Command {
	var rf ruleFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "The fleet in one view: hosts behind on the bucket, pairs that cannot reach each other, silent hosts, keys two agents run with; exit 0 only when all is well",
		Long: `health reads the bucket and the heartbeats every agent writes, and judges
the fleet from them: hosts whose last heartbeat reports an older revision
than the bucket's (behind), pairs of hosts where one sends to the other and
hears nothing back (unreachable), hosts whose heartbeats stopped (silent),
and bucket settings that put the mesh at risk, each with its fix. Hosts
that never wrote a heartbeat (ikto 0.3.0 agents) are listed but not held
against the fleet. It exits 0 only when all is well, so a monitor can run it
as it is; -o json gives the same findings to a script.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var h health
			err := a.withRows(cmd, rf, func(ctx context.Context, m *bucket.Mesh, rows []row) error {
				hbs, err := m.Heartbeats(ctx)
				if err != nil {
					return fmt.Errorf("NATS server %s: %w", m.Servers, err)
				}
				buckets, err := m.Statuses(ctx)
				if err != nil {
					return fmt.Errorf("NATS server %s: %w", m.Servers, err)
				}
				h = judgeHealth(rows, hbs, buckets[0].Revision, buckets[0].LastWrite, a.now())
				h.Bucket = m.Bucket()
				h.judgeSettings(buckets)
				return nil
			})
			if err != nil {
				return err
			}
			err = a.show(h, func(w io.Writer) error { return writeHealth(w, h) })
			if err == nil && !h.OK {
				err = errors.New("the fleet is not healthy")
			}
			return err
		},
	}
	rf.bind(cmd)
	return cmd
}

// judgeSettings adds what is wrong with the buckets' settings: a bucket
// that allows rollups makes the fleet unhealthy whatever its hosts do.
func (h *health) judgeSettings(buckets []bucket.Status) {
	h.Settings, h.Notes = []string{}, []string{}
	for _, b := range buckets {
		for _, p := range b.Problems {
			if errors.Is(p, bucket.ErrUnsafeBucket) {
				h.Settings = append(h.Settings, p.Error())
			} else {
				h.Notes = append(h.Notes, p.Error())
			}
		}
	}
	h.OK = h.OK && len(h.Settings) == 0
}

// judgeHealth looks at every valid host's heartbeat.
func judgeHealth(rows []row, hbs map[netip.Prefix]bucket.Heartbeat, last uint64, lastAt, now time.Time) health {
	h := health{Revision: last, Behind: []behindHost{}, Unreachable: []unreachablePair{}, Silent: []silentHost{}, Duplicate: []duplicateHost{},
		NoHeartbeat: []string{}}
	names := map[string]string{}
	for _, r := range rows {
		if r.State == stateValid {
			names[r.PublicKey] = hostName(r.Record)
		}
	}
	for _, r := range rows {
		if r.State != stateValid {
			continue
		}
		h.Hosts++
		name := hostName(r.Record)
		p, _ := netip.ParsePrefix(r.AllowedIP)
		hb, ok := hbs[p.Masked()]
		switch {
		case !ok || hb.PublicKey != r.PublicKey:
			h.NoHeartbeat = append(h.NoHeartbeat, name)
			continue
		case now.Sub(hb.At) >= mesh.OnlineWithin:
			h.Silent = append(h.Silent, silentHost{Name: name, PublicKey: r.PublicKey, LastHeartbeat: hb.At.UTC()})
			continue
		case hb.Revision < last && hb.At.After(lastAt.Add(catchUp)):
			h.Behind = append(h.Behind, behindHost{Name: name, PublicKey: r.PublicKey, Applied: hb.Revision})
		}
		if d := hb.Duplicate; d != nil {
			h.Duplicate = append(h.Duplicate, duplicateHost{Name: name, PublicKey: r.PublicKey, Writer: hb.Writer, Other: d.Writer, Since: d.Since.UTC()})
		}
		for _, k := range hb.Unreachable {
			to, known := names[k]
			if !known {
				continue // a peer that has left since: nothing to fix
			}
			h.Unreachable = append(h.Unreachable, unreachablePair{From: name, To: to, FromKey: r.PublicKey, ToKey: k})
		}
	}
	slices.SortFunc(h.Unreachable, func(x, y unreachablePair) int {
		return strings.Compare(x.From+"\x00"+x.To, y.From+"\x00"+y.To)
	})
	h.OK = len(h.Behind)+len(h.Unreachable)+len(h.Silent)+len(h.Duplicate) == 0
	return h
}

func writeHealth(w io.Writer, h health) error {
	fmt.Fprintf(w, "bucket %s at revision %d, %d hosts\n", h.Bucket, h.Revision, h.Hosts)
	for _, s := range h.Settings {
		fmt.Fprintf(w, "unsafe bucket: %s\n", s)
	}
	for _, s := range h.Notes {
		fmt.Fprintf(w, "note: %s\n", s)
	}
	if h.OK {
		fmt.Fprintln(w, "all well: every host has applied the bucket, every pair that talks hears back, no host is silent or runs twice")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if !h.OK {
		fmt.Fprintln(tw, "PROBLEM\tHOST\tDETAIL")
	}
	for _, b := range h.Behind {
		fmt.Fprintf(tw, "behind\t%s\tapplied revision %d of %d\n", b.Name, b.Applied, h.Revision)
	}
	for _, u := range h.Unreachable {
		fmt.Fprintf(tw, "unreachable\t%s → %s\tsends, hears nothing back\n", u.From, u.To)
	}
	for _, s := range h.Silent {
		fmt.Fprintf(tw, "silent\t%s\tlast heartbeat %s\n", s.Name, s.LastHeartbeat.Format(time.RFC3339))
	}
	for _, d := range h.Duplicate {
		fmt.Fprintf(tw, "duplicate\t%s\ttwo live agents run with its key: instance %s at %s and instance %s at %s, since %s; %s\n",
			d.Name, dash(d.Writer.Instance), dash(d.Writer.Addr), dash(d.Other.Instance), dash(d.Other.Addr), d.Since.Format(time.RFC3339), duplicateFix)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(h.NoHeartbeat) > 0 {
		fmt.Fprintf(w, "not judged (no heartbeat ever; ikto 0.3.0 agents write none): %s\n", strings.Join(h.NoHeartbeat, ", "))
	}
	return nil
}
