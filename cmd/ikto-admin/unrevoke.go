package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/peer"
)

// unrevoked is unrevoke's -o json output.
type unrevoked struct {
	PublicKey string `json:"public_key"`
	Key       string `json:"key"` // the revocation record deleted
	Unrevoked bool   `json:"unrevoked"`
}

// liftRevocationCommand is `ikto-admin unrevoke`.
func (a *app) liftRevocationCommand() *cobra.Command {
	var rf ruleFlags
	cmd := &cobra.Command{
		Use:   "unrevoke <public-key>",
		Short: "Lift the revocation of a public key, so agents accept records with it again",
		Long: `unrevoke deletes the revocation of a public key (evict wrote it) from the
bucket: agents accept a record with that key again, so the host that holds
the key may claim a prefix and rejoin. When the agents trust operator keys
(operator_keys), the lifting is a signed command: give the operator key
with --operator-key. ikto-admin list marks the revoked keys.`,
		Args: exactArgs(1, "one public key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pk, err := wgtypes.ParseKey(args[0])
			if err != nil {
				return cli.Usagef("%q is not a WireGuard public key (44 characters of base64)", args[0])
			}
			return a.withOperator(cmd, rf, func(ctx context.Context, m *bucket.Mesh, op bucket.Operator) error {
				if err := m.Unrevoke(ctx, pk, op); err != nil {
					if errors.Is(err, bucket.ErrNotRevoked) {
						return fmt.Errorf("public key %s is not revoked in bucket %s; `ikto-admin list` marks revoked keys", pk, m.Bucket())
					}
					return err
				}
				return a.show(unrevoked{PublicKey: pk.String(), Key: peer.RevokedKey(pk), Unrevoked: true}, func(w io.Writer) error {
					fmt.Fprintf(w, "unrevoked %s; a host with this key may claim a prefix again\n", pk)
					return nil
				})
			})
		},
	}
	rf.bind(cmd)
	return cmd
}
