package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
)

// operatorKeyEnv names the operator key file when --operator-key does not.
const operatorKeyEnv = "IKTO_OPERATOR_KEY"

// keygenCommand is `ikto-admin keygen`: an operator key, whose public half
// goes into every agent's operator_keys.
func (a *app) keygenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make an operator key: agents that list it in operator_keys obey the commands it signs",
		Long: `keygen writes a new Ed25519 operator key to FILE (mode 0600; it refuses
to overwrite one) and prints its public key. Put the public key in every
agent's operator_keys; then only commands signed with the key — evict,
prune, unrevoke with --operator-key FILE — remove a host or lift a
revocation, and a plain delete in the bucket is no command.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return cli.Usagef("--out FILE is required: where to write the private key")
			}
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return fmt.Errorf("make an operator key: %w", err)
			}
			err = config.WriteSecretFile(out, []byte(base64.StdEncoding.EncodeToString(priv.Seed())+"\n"), false)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists; keygen never overwrites a key (remove it first if it is no longer in any operator_keys)", out)
			}
			if err != nil {
				return fmt.Errorf("write the operator key: %w", err)
			}
			p := base64.StdEncoding.EncodeToString(pub)
			return a.show(map[string]string{"public_key": p, "private_key_file": out}, func(w io.Writer) error {
				fmt.Fprintf(w, "wrote the operator key to %s (keep it off the hosts)\npublic key: %s\nadd to every agent's config: \"operator_keys\": [%q]\n", out, p, p)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "where to write the private key (mode 0600)")
	return cmd
}

// operator is who signs what this command writes: the key of
// --operator-key (or $IKTO_OPERATOR_KEY), bound to the mesh's rules, or
// nobody. A mesh whose agents trust operator keys (-c shows operator_keys)
// needs one: a plain delete would be no command there.
// withOperator runs f with the mesh open and the operator that signs what f
// writes (evict, prune, unrevoke): -c and the operator key are read and
// checked before going to NATS.
func (a *app) withOperator(cmd *cobra.Command, rf ruleFlags, f func(ctx context.Context, m *bucket.Mesh, op bucket.Operator) error) error {
	if err := a.loadConfig(cmd); err != nil {
		return err
	}
	op, err := a.operator(cmd, rf)
	if err != nil {
		return err
	}
	return a.withMesh(cmd, func(ctx context.Context, m *bucket.Mesh) error { return f(ctx, m, op) })
}

func (a *app) operator(cmd *cobra.Command, rf ruleFlags) (bucket.Operator, error) {
	rules, err := a.rules(cmd, rf.meshCIDR, rf.subnetPrefix)
	if err != nil {
		return bucket.Operator{}, err
	}
	path := a.operatorKey
	if path == "" {
		path = os.Getenv(operatorKeyEnv)
	}
	if path == "" {
		if len(rules.Operators) > 0 {
			return bucket.Operator{}, cli.Usagef("the agents trust operator keys (operator_keys in %s): give the operator key with --operator-key FILE, or a plain delete is no command to them", a.configPath)
		}
		return bucket.Operator{Rules: rules}, nil
	}
	raw, err := config.ReadSecret("operator key", path)
	if err != nil {
		return bucket.Operator{}, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return bucket.Operator{}, fmt.Errorf("operator key %s is not base64 of a 32-byte Ed25519 seed (ikto-admin keygen writes one)", path)
	}
	op := bucket.Operator{Rules: rules, Key: ed25519.NewKeyFromSeed(seed)}
	if len(rules.Operators) > 0 {
		pub := op.Key.Public().(ed25519.PublicKey)
		trusted := false
		for _, k := range rules.Operators {
			trusted = trusted || k.Equal(pub)
		}
		if !trusted {
			return bucket.Operator{}, fmt.Errorf("operator key %s (public key %s) is not in operator_keys of %s: the agents would ignore what it signs",
				path, base64.StdEncoding.EncodeToString(pub), a.configPath)
		}
	}
	return op, nil
}
