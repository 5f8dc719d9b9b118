package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

const rejoinHint = "to rejoin, the host needs a new key and prefix from ikto-init"

func (a *app) evictCommand() *cobra.Command {
	var (
		dryRun bool
		r      revokeFlags
	)
	cmd := &cobra.Command{
		Use:   "evict <ip-or-prefix> [--user FILE|UPUB [--operator-seed FILE --account-jwt FILE [--system-creds FILE]]]",
		Short: "Remove the host whose prefix contains an address: delete its record and revoke its key",
		Long: `evict finds the host whose prefix contains the address (or is the prefix),
revokes its public key and deletes its record with compare-and-set on the
revision it read. Every agent drops the host; its own agent exits 4 and will
not start again with that key.

A host enrolled with ikto-admin enroll keeps its NATS user, which may still
write the host's own record (with a new key). --user names that user (the
host's .creds file, or its public nkey); with --operator-seed and
--account-jwt evict also revokes it in the account JWT, and with
--system-creds pushes that to the servers, which then close its
connections. Without them it prints how to revoke it.`,
		Args: exactArgs(1, "one address or prefix"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			if err := r.check(); err != nil {
				return err
			}
			var user *natsUser
			if r.user != "" {
				u, err := readUser(r.user)
				if err != nil {
					return err
				}
				user = &u
			}
			return a.withMesh(cmd, func(ctx context.Context, m *mesh) error {
				return a.evict(ctx, cmd, m, target, args[0], dryRun, r, user)
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be evicted and change nothing")
	r.bind(cmd.Flags(), true)
	return cmd
}

// evict evicts the holder of target and, given its NATS user, revokes that.
func (a *app) evict(ctx context.Context, cmd *cobra.Command, m *mesh, target netip.Prefix, arg string, dryRun bool, r revokeFlags, user *natsUser) error {
	h, err := bucket.FindHolder(ctx, m.kv, target)
	if errors.Is(err, bucket.ErrNoHolder) {
		return fmt.Errorf("no host holds %s in bucket %s; `ikto-admin list` shows who holds what", arg, m.kv.Bucket())
	}
	if err != nil {
		return err
	}
	if user != nil {
		if err := user.checkHost(m.kv.Bucket(), h.Key, hostName(h.Record)); err != nil {
			return err
		}
	}
	if dryRun {
		fmt.Fprintf(a.stdout, "would evict %s: %s\n", describe(h), plan(h))
		if user != nil {
			fmt.Fprintf(a.stdout, "would then revoke its NATS user %s\n", user.key)
		}
		fmt.Fprintln(a.stdout, "(dry run: nothing changed)")
		return nil
	}
	fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(h), plan(h))
	if err := bucket.Evict(ctx, m.kv, h.Key, h.Revision, h.Record); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "evicted %s; every agent drops it and its own agent exits 4 (%s)\n", hostName(h.Record), rejoinHint)
	if user == nil {
		fmt.Fprintf(a.stdout, "if %s was enrolled (ikto-admin enroll), its NATS user may still write its own record: revoke it with ikto-admin revoke-user %s.creds (docs/securing-membership.md)\n",
			hostName(h.Record), hostName(h.Record))
		return nil
	}
	if err := a.revokeUser(ctx, cmd, r, *user); err != nil {
		return err
	}
	if r.systemCreds == "" {
		return nil
	}
	return a.sweepAfterRevoke(ctx, m, h)
}

// sweepAfterRevoke evicts a record the host wrote at its key between its
// eviction and its user's revocation: with the user refused, nothing can
// write there again, so this pass is the last.
func (a *app) sweepAfterRevoke(ctx context.Context, m *mesh, was bucket.Holder) error {
	h, err := bucket.FindHolder(ctx, m.kv, was.Prefix)
	if errors.Is(err, bucket.ErrNoHolder) || (err == nil && h.Key != was.Key) {
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "the host wrote its record again before its user was revoked; evicting %s\n", describe(h))
	return bucket.Evict(ctx, m.kv, h.Key, h.Revision, h.Record)
}

// parseTarget reads an address (a single-address prefix) or a prefix.
func parseTarget(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	return netip.Prefix{}, cli.Usagef("%q is not an IP address or prefix (e.g. fd10:2082:5bc1::1 or fd10:2082:5bc1::/48)", s)
}

func hostName(r peer.Record) string {
	if r.Name == "" {
		return "(unnamed)"
	}
	return dash(r.Name)
}

func describe(h bucket.Holder) string {
	prefix := "-"
	if h.Prefix.IsValid() {
		prefix = h.Prefix.String()
	}
	return fmt.Sprintf("%s %s (public key %s, record %s at revision %d)",
		hostName(h.Record), prefix, dash(h.Record.PublicKey), h.Key, h.Revision)
}

func plan(h bucket.Holder) string {
	pk, err := wgtypes.ParseKey(h.Record.PublicKey)
	if err != nil || pk == (wgtypes.Key{}) {
		return "delete " + h.Key + " (its public key is not a valid key, so there is nothing to revoke)"
	}
	return "revoke its public key (" + peer.RevokedKey(pk) + "), then delete " + h.Key
}

func (a *app) unrevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unrevoke <public-key>",
		Short: "Lift the revocation of a public key, so agents accept records with it again",
		Args:  exactArgs(1, "one public key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pk, err := wgtypes.ParseKey(args[0])
			if err != nil {
				return cli.Usagef("%q is not a WireGuard public key (44 characters of base64)", args[0])
			}
			return a.withMesh(cmd, func(ctx context.Context, m *mesh) error {
				if err := bucket.Unrevoke(ctx, m.kv, pk); err != nil {
					if errors.Is(err, bucket.ErrNotRevoked) {
						return fmt.Errorf("public key %s is not revoked in bucket %s; `ikto-admin list` marks revoked keys", pk, m.kv.Bucket())
					}
					return err
				}
				fmt.Fprintf(a.stdout, "unrevoked %s; a host with this key may claim a prefix again\n", pk)
				return nil
			})
		},
	}
}

func (a *app) pruneCommand() *cobra.Command {
	var (
		offlineFor time.Duration
		dryRun     bool
	)
	cmd := &cobra.Command{
		Use:   "prune --offline-for DURATION",
		Short: "Evict every host silent for longer than DURATION",
		Long: `prune evicts every host whose last heartbeat is older than --offline-for, or,
with no heartbeat at all, whose record was written longer ago than that.
Nothing is evicted automatically: run it when you mean it, --dry-run first.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if offlineFor <= 0 {
				return cli.Usagef("prune needs --offline-for DURATION (e.g. 24h), longer than zero")
			}
			return a.withMesh(cmd, func(ctx context.Context, m *mesh) error {
				return a.prune(ctx, m, offlineFor, dryRun)
			})
		},
	}
	cmd.Flags().DurationVar(&offlineFor, "offline-for", 0, "evict hosts silent for longer than this (e.g. 30m, 24h)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be evicted and change nothing")
	return cmd
}

// prune evicts the silent hosts one by one; a failed eviction does not stop
// the others, and the command fails at the end naming them.
func (a *app) prune(ctx context.Context, m *mesh, offlineFor time.Duration, dryRun bool) error {
	entries, err := bucket.Scan(ctx, m.kv, peer.PeersPrefix+">")
	if err != nil {
		return fmt.Errorf("NATS server %s: %w", m.server, err)
	}
	hbs, err := bucket.Heartbeats(ctx, m.live)
	if err != nil {
		return fmt.Errorf("NATS server %s: %w", m.server, err)
	}
	now := a.now()
	var failed []string
	pruned := 0
	for _, e := range entries {
		h := bucket.Holder{Key: e.Key(), Revision: e.Revision()}
		_ = json.Unmarshal(e.Value(), &h.Record) // garbage has no heartbeat: judged by age
		r := row{Record: h.Record}
		r.setLiveness(hbs, now)
		var why string
		switch {
		case r.LastSeen != nil && now.Sub(*r.LastSeen) > offlineFor:
			why = "last seen " + ago(now.Sub(*r.LastSeen)) + " ago"
		case r.LastSeen == nil && now.Sub(e.Created()) > offlineFor:
			why = "no heartbeat, record written " + ago(now.Sub(e.Created())) + " ago"
		default:
			continue
		}
		h.Prefix, _ = netip.ParsePrefix(h.Record.AllowedIP)
		pruned++
		if dryRun {
			fmt.Fprintf(a.stdout, "would evict %s: %s\n", describe(h), why)
			continue
		}
		fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(h), why)
		if err := bucket.Evict(ctx, m.kv, h.Key, h.Revision, h.Record); err != nil {
			fmt.Fprintf(a.stderr, "ikto-admin: %v\n", err)
			failed = append(failed, h.Key)
		}
	}
	switch {
	case pruned == 0:
		fmt.Fprintf(a.stdout, "no host has been silent for longer than %s\n", offlineFor)
	case dryRun:
		fmt.Fprintln(a.stdout, "(dry run: nothing changed)")
	case len(failed) == 0:
		fmt.Fprintf(a.stdout, "evicted %d hosts (%s)\n", pruned, rejoinHint)
	}
	if len(failed) > 0 {
		return fmt.Errorf("prune: %d of %d evictions failed (%s); run prune again", len(failed), pruned, strings.Join(failed, ", "))
	}
	return nil
}
