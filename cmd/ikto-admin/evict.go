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
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "evict <ip-or-prefix>",
		Short: "Remove the host whose prefix contains an address: delete its record and revoke its key",
		Long: `evict finds the host whose prefix contains the address (or is the prefix),
revokes its public key and deletes its record with compare-and-set on the
revision it read. Every agent drops the host; its own agent exits 4 and will
not start again with that key.`,
		Args: exactArgs(1, "one address or prefix"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			return a.withMesh(cmd, func(ctx context.Context, m *mesh) error {
				h, err := bucket.FindHolder(ctx, m.kv, target)
				if errors.Is(err, bucket.ErrNoHolder) {
					return fmt.Errorf("no host holds %s in bucket %s; `ikto-admin list` shows who holds what", args[0], m.kv.Bucket())
				}
				if err != nil {
					return err
				}
				asJSON := a.output == "json"
				if dryRun {
					if asJSON {
						return writeJSON(a.stdout, newEvictionReport(h, true, false))
					}
					fmt.Fprintf(a.stdout, "would evict %s: %s\n(dry run: nothing changed)\n", describe(h), plan(h))
					return nil
				}
				if !asJSON {
					fmt.Fprintf(a.stdout, "evicting %s: %s\n", describe(h), plan(h))
				}
				if err := bucket.Evict(ctx, m.kv, h.Key, h.Revision, h.Record); err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, newEvictionReport(h, false, true))
				}
				fmt.Fprintf(a.stdout, "evicted %s; every agent drops it and its own agent exits 4 (%s)\n", hostName(h.Record), rejoinHint)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be evicted and change nothing")
	return cmd
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
