package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

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
	asJSON := a.output == "json"
	if dryRun && asJSON {
		return writeJSON(a.stdout, newEvictionReport(h, true, false))
	}
	if dryRun {
		fmt.Fprintf(a.stdout, "would evict %s: %s\n", describe(h), plan(h))
		if user != nil {
			fmt.Fprintf(a.stdout, "would then revoke its NATS user %s\n", user.key)
		}
		fmt.Fprintln(a.stdout, "(dry run: nothing changed)")
		return nil
	}
	if !asJSON {
		fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(h), plan(h))
	}
	if err := bucket.Evict(ctx, m.kv, h.Key, h.Revision, h.Record); err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(a.stdout, newEvictionReport(h, false, true)); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "evicted %s; every agent drops it and its own agent exits 4 (%s)\n", hostName(h.Record), rejoinHint)
	}
	if user == nil && !asJSON {
		fmt.Fprintf(a.stdout, "if %s was enrolled (ikto-admin enroll), its NATS user may still write its own record: revoke it with ikto-admin revoke-user %s.creds (docs/securing-membership.md)\n",
			hostName(h.Record), hostName(h.Record))
		return nil
	}
	if user == nil {
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
