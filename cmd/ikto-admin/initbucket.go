package main

import (
	"fmt"
	"io"
	"time"

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
Nats-Rollup headers (made by ikto 0.3.0, or by other tools) is changed
to refuse them: one such message from any host empties the bucket; and the
mesh's bucket is made to republish what it stores, so agents follow it
without a consumer each (nats-server 2.10 and later can add this to an
existing stream; on 2.9 the bucket must be made again). Enrolled
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
	done, err := conn.Prepare(ctx)
	for _, b := range done {
		if b.Fixed {
			fmt.Fprintf(a.stdout, "%s %s: changed to refuse Nats-Rollup headers%s\n", b.What, b.Name, republishNote(b))
		}
		describeBucket(a.stdout, b)
	}
	if err != nil {
		return whoMay(fmt.Errorf("NATS server %s: %w", conn.Servers, err))
	}
	return nil
}

// republishNote says what a changed bucket now republishes.
func republishNote(b bucket.Prepared) string {
	if b.Follow == "" {
		return ""
	}
	return " and to republish to " + b.Follow
}

func describeBucket(w io.Writer, b bucket.Prepared) {
	verb, rollups, maxAge := "exists", "refused", "none"
	if b.Created {
		verb = "created"
	}
	if b.Rollups {
		rollups = "ALLOWED"
	}
	if b.MaxAge > 0 {
		maxAge = b.MaxAge.Round(time.Second).String()
	}
	fmt.Fprintf(w, "%s %s %s: history %d, replicas %d, max age %s, rollups %s, %d values\n",
		b.What, b.Name, verb, b.History, b.Replicas, maxAge, rollups, b.Values)
	for _, p := range b.Problems {
		fmt.Fprintf(w, "  still: %v\n", p)
	}
}
