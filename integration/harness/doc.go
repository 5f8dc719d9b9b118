// Package harness stands up the world ikto's integration tests, demo and
// benchmarks run in: a Linux bridge with one network namespace per host on a
// random 198.18.0.0/15 underlay, an embedded NATS JetStream server (package
// internal/testkit/natsserver) listening on the bridge, the ikto
// binaries built once, and agents running as real processes inside the
// namespaces. It returns errors and has Close methods instead of taking a
// testing.T, so that a long-running demo can use it as well as a test;
// package harnesstest adapts it to testing.TB.
//
// Everything it creates carries a per-run random suffix, so two test binaries
// running at once never collide, and everything it starts is killed by PID and
// removed on Close. A run that dies before Close (a test timeout, a SIGKILL)
// leaves a state file that the next NewNetwork uses to sweep up after it.
package harness
