// Package bench is ikto's benchmark suite: how fast a new peer record reaches
// many agents, how long an agent takes to sync a large bucket and how much
// memory it holds, what an idle agent costs, how fast a real mesh of agents
// in network namespaces converges, and what throughput the mesh carries
// compared with a hand-configured wireguard-go and the bare underlay.
//
// Every scenario runs the real code paths (pkg/agent with its own NATS
// connection, watch, validation and reconcile; the real ikto-agent binary;
// the embedded userspace WireGuard device) against a real nats-server, and
// returns Figures: a median with p99 or min/max over repeated runs, the
// target it is held to, and ikto 0.3.0's figure where there is one.
// cmd/ikto-bench runs them all, prints one table and writes the same figures
// as JSON. Nothing here asserts a duration: the figures are reported, and the
// docs/performance.md says which targets are met.
package bench
