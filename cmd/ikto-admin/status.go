package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ikto-mesh/ikto/pkg/api"
)

func (a *app) statusCommand() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "status [-s SOCKET]",
		Short: "Show the local agent's view over its admin socket: self, backend, NATS, peers",
		Long: `status asks the agent on this host, over its admin socket (-s), for its
view: this host's record and address, the WireGuard backend and device, the
NATS connection (the server, or the URL and the last error while
disconnected), and each peer with its endpoint and last handshake. It exits
0 only when the agent follows the bucket and is connected to NATS.

The socket is read-only. Root may read it, and so may the members of its
group (ikto, which the package creates): add an operator with
usermod -aG ikto NAME. It never changes the mesh: evict and the other
commands that do go through NATS with the operator's credentials.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.agentStatus(cmd, socket)
			if err != nil {
				return err
			}
			if err := a.show(st, func(w io.Writer) error { return writeStatusTable(w, st, a.now()) }); err != nil {
				return err
			}
			// Scripts and monitors read the exit status: 0 only for an
			// agent that follows the bucket and can hear its changes, and
			// holds its key alone.
			if d := st.Duplicate; d != nil {
				return fmt.Errorf("another agent runs with this host's key (instance %s at %s); %s", dash(d.Instance), dash(d.Addr), d.Fix)
			}
			if !st.Synced || !st.NATS.Connected {
				return fmt.Errorf("the agent at %s is not synced and connected: state %s, NATS %s",
					socket, dash(st.State), connectedWord(st.NATS.Connected))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&socket, "socket", "s", api.DefaultSocket, "the agent's admin socket")
	return cmd
}

// writeStatusTable prints the agent's header as "field  value" lines, then
// one aligned line per peer and per rejected record.
func writeStatusTable(w io.Writer, st api.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	self := st.Self
	fmt.Fprintf(tw, "self\t%s %s (public key %s)\n", hostName(self), dash(self.AllowedIP), dash(self.PublicKey))
	fmt.Fprintf(tw, "address\t%s\n", dash(st.Address))
	fmt.Fprintf(tw, "endpoint\t%s\n", dash(row{Record: self}.endpoint()))
	fmt.Fprintf(tw, "backend\t%s\n", dash(string(st.Backend)))
	fmt.Fprintf(tw, "device\t%s\n", dash(st.Device))
	nats := "disconnected from " + dash(st.NATS.URL)
	if st.NATS.LastError != "" {
		nats += ", last error: " + st.NATS.LastError
	}
	if st.NATS.Connected {
		nats = "connected to " + dash(st.NATS.Server)
	}
	fmt.Fprintf(tw, "nats\t%s (bucket %s)\n", nats, dash(st.NATS.Bucket))
	for _, p := range st.NATS.Problems {
		fmt.Fprintf(tw, "unsafe bucket\t%s\n", p)
	}
	fmt.Fprintf(tw, "state\t%s\n", dash(st.State))
	fmt.Fprintf(tw, "claim\t%s\n", dash(st.Claim))
	fmt.Fprintf(tw, "synced\t%s\n", yesNo(st.Synced))
	last := "never"
	if st.LastReconcile != nil {
		last = st.LastReconcile.UTC().Format(time.RFC3339) + " (" + ago(now.Sub(*st.LastReconcile)) + " ago)"
	}
	fmt.Fprintf(tw, "last reconcile\t%s\n", last)
	if d := st.Duplicate; d != nil {
		fmt.Fprintf(tw, "duplicate\tanother agent runs with this host's key: instance %s at %s (name %s, version %s), since %s\n",
			dash(d.Instance), dash(d.Addr), dash(d.Name), dash(d.Version), d.Since.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\n%d peers\n", len(st.Peers))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPREFIX\tENDPOINT\tHANDSHAKE\tRX\tTX")
	for _, p := range st.Peers {
		prefix := p.AllowedIP
		if prefix == "" && len(p.AllowedIPs) > 0 {
			prefix = p.AllowedIPs[0] // a peer no record asks for: what the device has
		}
		hs := "never"
		if p.LatestHandshake != nil && !p.LatestHandshake.IsZero() {
			hs = ago(now.Sub(*p.LatestHandshake)) + " ago"
		}
		switch {
		case p.Handshake == "pending" && p.PendingSince != nil:
			hs = "pending " + ago(now.Sub(*p.PendingSince))
		case p.Handshake == "stale":
			hs += " (stale)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", dash(p.Name), dash(prefix), dash(p.Endpoint), hs, humanBytes(p.RxBytes), humanBytes(p.TxBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Rejected) > 0 {
		fmt.Fprintf(w, "\n%d rejected records\n", len(st.Rejected))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tREVISION\tREASON\tDETAIL")
		for _, r := range st.Rejected {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Key, r.Revision, r.Reason, r.Detail)
		}
		return tw.Flush()
	}
	return nil
}

func connectedWord(c bool) string {
	if c {
		return "connected"
	}
	return "disconnected"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanBytes is a byte count in IEC units: 0 B, 512 B, 1.5 KiB, 20.0 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (a *app) ipCommand() *cobra.Command {
	var socket string
	var prefix bool
	cmd := &cobra.Command{
		Use:   "ip [-s SOCKET] [--prefix]",
		Short: "Print this host's address in the mesh (or its prefix), as the local agent has it",
		Long: `ip asks the local agent over its admin socket for this host's address in
the mesh (private_address) and prints it alone on a line, for scripts:
ping "$(ikto-admin ip)". --prefix prints the host's prefix instead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.agentStatus(cmd, socket)
			if err != nil {
				return err
			}
			out := st.Address
			if prefix {
				out = st.Self.AllowedIP
			}
			if out == "" {
				return fmt.Errorf("the agent at %s reports no address yet", socket)
			}
			_, err = fmt.Fprintln(a.stdout, out)
			return err
		},
	}
	cmd.Flags().StringVarP(&socket, "socket", "s", api.DefaultSocket, "the agent's admin socket")
	cmd.Flags().BoolVar(&prefix, "prefix", false, "print the host's prefix instead of its address")
	return cmd
}

// agentStatus asks the local agent at socket for its status.
func (a *app) agentStatus(cmd *cobra.Command, socket string) (api.Status, error) {
	ctx, cancel := a.withTimeout(cmd.Context())
	defer cancel()
	return api.NewClient(socket).Status(ctx)
}
