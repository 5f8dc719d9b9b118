package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
)

func (a *app) initBucketCommand() *cobra.Command {
	var replicas int
	cmd := &cobra.Command{
		Use:   "init-bucket [--replicas N]",
		Short: "Create the bucket and its heartbeat bucket with the agents' settings (idempotent)",
		Long: `init-bucket creates the mesh's bucket (--nats-kv) and its heartbeat bucket
(<bucket>-live) with exactly the settings an agent would create them with.
A bucket that exists keeps its settings, except that one allowing
Nats-Rollup headers (made by ikto before 0.5, or by other tools) is changed
to refuse them: one such message from any host empties the bucket. Enrolled
hosts (ikto-admin enroll) may not create buckets: an operator runs this once
before they start, and again after upgrading ikto.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.loadConfig(cmd); err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") && a.cfg != nil && a.cfg.NATSKVReplicas > 0 {
				replicas = a.cfg.NATSKVReplicas
			}
			if replicas < 1 || replicas > 5 {
				return cli.Usagef("--replicas %d: want 1 to 5 (3 on a 3-server JetStream cluster)", replicas)
			}
			return a.initBuckets(cmd, replicas)
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 1, "replicas of a bucket created now (default: nats_kv_replicas of -c, else 1)")
	return cmd
}

// initBuckets opens or creates both buckets, saying which it did.
func (a *app) initBuckets(cmd *cobra.Command, replicas int) error {
	ctx, cancel := a.withTimeout(cmd.Context())
	defer cancel()
	conn, err := a.dial(cmd, replicas)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, b := range []struct {
		what string
		open func(context.Context, bool) (jetstream.KeyValue, error)
	}{{"bucket", conn.Mesh}, {"heartbeat bucket", conn.Live}} {
		kv, err := b.open(ctx, false)
		created := false
		if errors.Is(err, bucket.ErrBucketMissing) {
			kv, err = b.open(ctx, true)
			created = true
		}
		if err != nil {
			return whoMay(fmt.Errorf("NATS server %s: %w", conn.Servers, conn.Explain(err)))
		}
		fixed, err := bucket.RefuseRollups(ctx, conn.JS, kv.Bucket())
		if err != nil {
			return whoMay(fmt.Errorf("NATS server %s: %w; the bucket stays open to rollups until an operator's credentials may update its stream",
				conn.Servers, conn.Explain(err)))
		}
		if fixed {
			fmt.Fprintf(a.stdout, "%s %s: changed to refuse Nats-Rollup headers\n", b.what, kv.Bucket())
		}
		if err := a.describeBucket(ctx, b.what, kv, created); err != nil {
			return whoMay(fmt.Errorf("NATS server %s: %w", conn.Servers, conn.Explain(err)))
		}
	}
	return nil
}

func (a *app) describeBucket(ctx context.Context, what string, kv jetstream.KeyValue, created bool) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("status of %s %s: %w", what, kv.Bucket(), err)
	}
	verb := "exists"
	if created {
		verb = "created"
	}
	replicas, rollups := 0, "refused"
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		replicas = s.StreamInfo().Config.Replicas
		if s.StreamInfo().Config.AllowRollup {
			rollups = "ALLOWED"
		}
	}
	maxAge := "none"
	if st.TTL() > 0 {
		maxAge = st.TTL().Round(time.Second).String()
	}
	fmt.Fprintf(a.stdout, "%s %s %s: history %d, replicas %d, max age %s, rollups %s, %d values\n",
		what, kv.Bucket(), verb, st.History(), replicas, maxAge, rollups, st.Values())
	return nil
}
