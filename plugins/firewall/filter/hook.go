package filter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/hashicorp/go-hclog"

	"github.com/ikto-mesh/ikto/plugins/sdk"
)

// Hook is the firewall hook. The zero value is not usable; call New.
//
// Its calls are a few short netlink round trips; the nftables library takes
// no context, so a call checks its context only before it starts.
type Hook struct {
	log   hclog.Logger
	netns int // 0: the namespace the process runs in

	// mu serialises calls; the agent never overlaps them, but a Hook used
	// from a test or another host must not interleave two transactions.
	mu     sync.Mutex
	rules  *ruleset        // nil until Configure succeeds
	warned map[string]bool // skipped-peer messages already logged
}

var _ sdk.Hook = (*Hook)(nil)

// Option tunes New.
type Option func(*Hook)

// WithLogger sets where the hook logs (default: nowhere).
func WithLogger(l hclog.Logger) Option { return func(h *Hook) { h.log = l } }

// WithNetNS makes the hook work in the network namespace that fd refers to
// instead of its own. Tests use it to give every case a namespace of its own.
func WithNetNS(fd int) Option { return func(h *Hook) { h.netns = fd } }

// New returns a Hook that has installed nothing yet.
func New(opts ...Option) *Hook {
	h := &Hook{log: hclog.NewNullLogger(), warned: map[string]bool{}}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *Hook) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if h.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(h.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	return c, nil
}

// Configure installs the table for node, replacing any table of the same
// name in one transaction. The members and counters of a table left by an
// earlier run are carried over, so the peers it let in stay let in until
// the Apply that follows says otherwise.
func (h *Hook) Configure(ctx context.Context, node sdk.Node) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("configure firewall: %w", err)
	}
	cfg, err := decodeConfig(node.Config)
	if err != nil {
		return err
	}
	r, err := newRuleset(node, cfg)
	if err != nil {
		return err
	}
	conn, err := h.conn()
	if err != nil {
		return err
	}
	carried, _, err := r.readMembers(conn)
	if err != nil {
		return fmt.Errorf("configure firewall: %w", err)
	}
	if err := r.install(conn, carried); err != nil {
		return fmt.Errorf("configure firewall: %w", err)
	}
	old := h.rules
	h.rules = &r
	// A new table name leaves the old table behind; remove it only now that
	// the new one guards the host.
	if old != nil && old.table != r.table {
		if err := removeTable(conn, old.table); err != nil {
			return fmt.Errorf("configure firewall: %w", err)
		}
	}
	h.log.Info("firewall table installed", "table", "inet "+r.table, "device", r.device,
		"wg_port", r.port, "prefix", r.self.String(), "carried_members", carried.count())
	return nil
}

// Apply makes the sets hold exactly change.Peers' endpoints and prefixes,
// writing only the difference to what the kernel holds. A table that has
// gone (nft flush ruleset, a firewall reload) is installed again.
func (h *Hook) Apply(ctx context.Context, change sdk.Change) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	r := h.rules
	if r == nil {
		return errors.New("apply firewall: not configured (Apply before Configure)")
	}
	want, skipped := r.desiredMembers(change.Peers)
	h.warnSkipped(skipped)
	conn, err := h.conn()
	if err != nil {
		return err
	}
	have, intact, err := r.readMembers(conn)
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	if intact {
		if intact, err = r.rulesIntact(conn); err != nil {
			return fmt.Errorf("apply firewall: %w", err)
		}
	}
	if !intact {
		h.log.Warn("firewall table missing or changed outside ikto, installing it again", "table", "inet "+r.table)
		if err := r.install(conn, want); err != nil {
			return fmt.Errorf("apply firewall: %w", err)
		}
		return nil
	}
	diff := diffMembers(have, want)
	if len(diff) == 0 {
		return nil
	}
	if err := r.writeDiff(conn, diff); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	for _, name := range []string{SetEndpoints4, SetEndpoints6, SetPrefixes} {
		if d, ok := diff[name]; ok {
			h.log.Info("firewall set updated", "table", "inet "+r.table, "set", name,
				"added", len(d.add), "removed", len(d.del))
		}
	}
	return nil
}

// warnSkipped logs each skipped peer once for as long as it stays skipped.
func (h *Hook) warnSkipped(skipped []error) {
	now := map[string]bool{}
	for _, err := range skipped {
		msg := err.Error()
		now[msg] = true
		if !h.warned[msg] {
			h.log.Warn("peer left out of the firewall sets", "err", msg)
		}
	}
	h.warned = now
}

// Stop deletes the table: see the package documentation for why the hook
// leaves no allow-list behind.
func (h *Hook) Stop(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop firewall: %w", err)
	}
	if h.rules == nil {
		return nil
	}
	conn, err := h.conn()
	if err != nil {
		return err
	}
	if err := removeTable(conn, h.rules.table); err != nil {
		return fmt.Errorf("stop firewall: %w", err)
	}
	h.log.Info("firewall table removed", "table", "inet "+h.rules.table)
	h.rules = nil
	return nil
}

// Counts returns the table's drop counters by name (CounterWGPortDrops,
// CounterPrefixDrops).
func (h *Hook) Counts() (map[string]Count, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rules == nil {
		return nil, errors.New("firewall counters: not configured")
	}
	conn, err := h.conn()
	if err != nil {
		return nil, err
	}
	return readCounts(conn, h.rules.table)
}
