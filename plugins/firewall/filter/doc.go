// Package filter is the firewall hook's engine: it keeps one nftables table
// (inet ikto by default) in step with the mesh, through netlink
// (github.com/google/nftables), never through the nft command.
//
// The table holds sets of the peers' endpoint addresses (one per address
// family, since the underlay may mix them) and an interval set of the peers'
// prefixes, two named counters, and two base chains, input and forward, whose
// policy is accept: ikto only adds drops and leaves every other decision to
// the host's own firewall. The drops are:
//
//   - UDP to the WireGuard port (wg_port) whose source address is not a
//     peer's endpoint address (counter wg_port_drops). The source port is not
//     matched: NAT and port mapping rewrite it, the address is what a peer
//     advertises.
//   - packets that arrive on the WireGuard device for this host's own prefix
//     (its address and, forwarded, the VMs behind it) whose source is not in a
//     peer's prefix (counter prefix_drops). WireGuard's allowed-ips already
//     bind sources to peers; this keeps that true even if someone adds a peer
//     by hand or a stale peer lingers on the device.
//
// Configure replaces the whole table in one netlink transaction and carries
// the members and counters of the table it replaces over, so a restarted
// hook never opens a window in which members are dropped. Apply reads the
// sets back from the kernel (it does not trust memory: the hook may have
// been restarted, or someone may have edited the sets) and writes only the
// difference, additions and deletions in one transaction; sets are never
// flushed and refilled. When the table, a set or a chain's rules have gone
// (nft flush ruleset, a firewall reload), Apply installs the table again.
// Stop deletes the table, because an allow-list that no running agent
// maintains goes stale: a peer that changes its endpoint while ikto is down
// would be cut off by a firewall nobody updates. WireGuard itself answers no
// unauthenticated packet, so the port without the table is open to
// handshake attempts, not to traffic.
package filter
