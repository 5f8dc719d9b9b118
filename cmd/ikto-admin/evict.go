package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

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
		keys   keyChoice
		r      revokeFlags
		rf     ruleFlags
	)
	cmd := &cobra.Command{
		Use:   "evict <name|ip|prefix> [--user FILE|UPUB [--operator-seed FILE --account-jwt FILE [--system-creds FILE]]]",
		Short: "Remove a host, by name or by an address in its prefix: delete its record and revoke its key",
		Long: `evict finds the host whose prefix contains the address (or is the prefix),
or whose record carries the name (as ikto-admin list shows it; a name two
records carry is refused: give the address), revokes its public key and
deletes its record with compare-and-set on the revision it read. Every agent drops the host; its own agent exits 4 and will
not start again with that key.

A host enrolled with ikto-admin enroll keeps its NATS user, which may still
write the host's own record (with a new key). --user names that user (the
host's .creds file, or its public nkey); with --operator-seed and
--account-jwt evict also revokes it in the account JWT, and with
--system-creds pushes that to the servers, which then close its
connections. Without them it prints how to revoke it.

A public key with records at more than one prefix means one of them is a
copy: a host may publish, at its own prefix, the record of another host's
key. evict then refuses to revoke the key, which would cut off the host
that really holds it, until told what to do: --keep-key deletes only the
record at the address given and leaves the key alone (remove an intruder's
copy, and revoke the intruder's NATS user with --user); --revoke-key
revokes the key anyway.`,
		Args: exactArgs(1, "one host name, address or prefix"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := parseTarget(args[0])
			byName := errors.Is(err, errNotAnAddress)
			if err != nil && !byName {
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
			if keys.keep && keys.revoke {
				return cli.Usagef("--keep-key and --revoke-key exclude each other")
			}
			return a.withOperator(cmd, rf, func(ctx context.Context, m *bucket.Mesh, op bucket.Operator) error {
				if byName {
					if target, err = prefixOfName(ctx, m, args[0]); err != nil {
						return err
					}
				}
				return a.evict(ctx, cmd, m, target, args[0], dryRun, keys, r, user, op)
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be evicted and change nothing")
	cmd.Flags().BoolVar(&keys.keep, "keep-key", false, "delete only the record at the address; do not revoke its public key (the record is a copy of another host's key)")
	cmd.Flags().BoolVar(&keys.revoke, "revoke-key", false, "revoke the public key even when other records carry it too")
	r.bind(cmd.Flags(), true)
	rf.bind(cmd)
	return cmd
}

// keyChoice is what evict was told to do with a public key that other
// records carry too.
type keyChoice struct{ keep, revoke bool }

// evict evicts the holder of target and, given its NATS user, revokes that.
func (a *app) evict(ctx context.Context, cmd *cobra.Command, m *bucket.Mesh, target netip.Prefix, arg string, dryRun bool, keys keyChoice, r revokeFlags, user *natsUser, op bucket.Operator) error {
	h, err := m.FindHolder(ctx, target)
	if errors.Is(err, bucket.ErrNoHolder) {
		return fmt.Errorf("no host holds %s in bucket %s; `ikto-admin list` shows who holds what", arg, m.Bucket())
	}
	if err != nil {
		return err
	}
	e, err := a.planEviction(ctx, m, h, arg, keys)
	e.op = op
	if err != nil {
		return err
	}
	if user != nil {
		if err := user.checkHost(m.Bucket(), h.Key, hostName(h.Record)); err != nil {
			return err
		}
	}
	asJSON := a.output == "json"
	if dryRun && asJSON {
		return writeJSON(a.stdout, newEvictionReport(e, true, false))
	}
	if dryRun {
		fmt.Fprintf(a.stdout, "would evict %s: %s\n", describe(h), e.plan())
		if user != nil {
			fmt.Fprintf(a.stdout, "would then revoke its NATS user %s\n", user.key)
		}
		fmt.Fprintln(a.stdout, "(dry run: nothing changed)")
		return nil
	}
	if !asJSON {
		fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(h), e.plan())
	}
	if err := e.run(ctx, m); err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(a.stdout, newEvictionReport(e, false, true)); err != nil {
			return err
		}
	} else if !e.revoke {
		fmt.Fprintf(a.stdout, "deleted the record at %s; public key %s stays valid (its record at %s is routed)\n",
			h.Key, dash(h.Record.PublicKey), strings.Join(e.alsoAt(), ", "))
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
	return a.sweepAfterRevoke(ctx, m, h, op)
}

// sweepAfterRevoke evicts a record the host wrote at its key between its
// eviction and its user's revocation: with the user refused, nothing can
// write there again, so this pass is the last.
func (a *app) sweepAfterRevoke(ctx context.Context, m *bucket.Mesh, was bucket.Holder, op bucket.Operator) error {
	h, err := m.FindHolder(ctx, was.Prefix)
	if errors.Is(err, bucket.ErrNoHolder) || (err == nil && h.Key != was.Key) {
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "the host wrote its record again before its user was revoked; evicting %s\n", describe(h))
	return m.Evict(ctx, h, op)
}

// parseTarget reads an address (a single-address prefix) or a prefix.
// errNotAnAddress: the argument is no address or prefix, so it may be a
// host's name.
var errNotAnAddress = errors.New("not an IP address or prefix")

func parseTarget(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if strings.ContainsAny(s, ":/%") || s == "" {
		// Meant as an address, and not one (names carry none of these).
		return netip.Prefix{}, cli.Usagef("%q is not an IP address, prefix or host name (e.g. fd10:2082:5bc1::1, fd10:2082:5bc1::/48 or the NAME ikto-admin list shows)", s)
	}
	return netip.Prefix{}, fmt.Errorf("%q: %w", s, errNotAnAddress)
}

// prefixOfName is the prefix of the one record that carries name.
func prefixOfName(ctx context.Context, m *bucket.Mesh, name string) (netip.Prefix, error) {
	entries, err := m.Records(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	var found []netip.Prefix
	for _, e := range entries {
		r, err := peer.DecodeRecord(e.Value)
		if err != nil || r.Name != name {
			continue
		}
		if p, err := netip.ParsePrefix(r.AllowedIP); err == nil {
			found = append(found, p.Masked())
		}
	}
	switch len(found) {
	case 0:
		return netip.Prefix{}, cli.Usagef("no host is named %q in bucket %s, and it is no IP address or prefix (e.g. fd10:2082:5bc1::1 or fd10:2082:5bc1::/48); `ikto-admin list` shows every host", name, m.Bucket())
	case 1:
		return found[0], nil
	}
	var ps []string
	for _, p := range found {
		ps = append(ps, p.String())
	}
	return netip.Prefix{}, cli.Usagef("%d records carry the name %q (%s): evict by address instead", len(found), name, strings.Join(ps, ", "))
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

// eviction is what evict will do to one record.
type eviction struct {
	holder bucket.Holder
	// revoke: the record's public key is revoked (it is a valid key, and
	// not --keep-key).
	revoke bool
	// others are the records of the same public key under other prefixes.
	others []bucket.Copy
	// op signs what the eviction writes, if it signs.
	op bucket.Operator
}

// planEviction decides what to do with h's public key. A key that other
// records carry too is revoked only with --revoke-key: one of the records
// is a copy, and revoking would cut off the host that really holds the key.
func (a *app) planEviction(ctx context.Context, m *bucket.Mesh, h bucket.Holder, arg string, keys keyChoice) (eviction, error) {
	e := eviction{holder: h}
	pk, err := wgtypes.ParseKey(h.Record.PublicKey)
	if err != nil || pk == (wgtypes.Key{}) {
		return e, nil // nothing to revoke
	}
	e.revoke = !keys.keep
	if _, err := netip.ParsePrefix(h.Record.AllowedIP); err != nil {
		return e, nil
	}
	if e.others, err = m.FindCopies(ctx, h.Record); err != nil {
		return e, err
	}
	if len(e.others) > 0 && !keys.keep && !keys.revoke {
		return e, fmt.Errorf("public key %s of %s also has a record at %s: one of them is a copy of another host's key, and revoking the key would cut off the host that really holds it; "+
			"to delete only the record at %s and keep the key: ikto-admin evict %s --keep-key (add --user with that record's NATS user to stop it writing again); to revoke the key anyway: --revoke-key",
			h.Record.PublicKey, describe(h), strings.Join(e.alsoAt(), ", "), h.Key, arg)
	}
	return e, nil
}

// alsoAt names the other records of the key, with their names.
func (e eviction) alsoAt() []string {
	var out []string
	for _, c := range e.others {
		out = append(out, fmt.Sprintf("%s (%s, name %s)", dash(c.Record.AllowedIP), c.Key, hostName(c.Record)))
	}
	return out
}

func (e eviction) plan() string {
	h := e.holder
	pk, err := wgtypes.ParseKey(h.Record.PublicKey)
	switch {
	case err != nil || pk == (wgtypes.Key{}):
		return "delete " + h.Key + " (its public key is not a valid key, so there is nothing to revoke)"
	case !e.revoke:
		return "delete " + h.Key + " only; its public key is not revoked (--keep-key)"
	}
	return "revoke its public key (" + peer.RevokedKey(pk) + "), then delete " + h.Key
}

// run carries the eviction out: Evict (revoke, then delete), or with the
// key kept only the delete, with compare-and-set on the revision read.
func (e eviction) run(ctx context.Context, m *bucket.Mesh) error {
	h := e.holder
	if e.revoke {
		return m.Evict(ctx, h, e.op)
	}
	if err := m.DeleteRecord(ctx, h, e.op); err != nil {
		return fmt.Errorf("%w; the record changed since it was read: run evict again", err)
	}
	return nil
}
