//! The pod network across nodes, decided: from this node and the others (their address and pod
//! CIDR, as their Node objects say), the routes, FDB and neighbour entries that reach every
//! other node's pods. Pure; [`crate::links`] makes the kernel match it.
//!
//! Two backends, after flannel's:
//! - `vxlan`: one VXLAN device per node ([`VXLAN_DEVICE`], VNI 1, UDP 8472, no learning). Each
//!   node's VTEP has a MAC derived from its name ([`vtep_mac`]) and, as its gateway address, the
//!   first address of its pod CIDR (held on its own device as a /32). Per remote node: an FDB
//!   entry (its MAC → its node address), a neighbour entry (its gateway → its MAC) and a route
//!   (its pod CIDR via its gateway, onlink, on the device).
//! - `host-gw`: per remote node a route to its pod CIDR via its node address (the nodes share a
//!   network segment).

use crate::config::Cidr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The VXLAN device every node makes (flannel's `flannel.1`).
pub const VXLAN_DEVICE: &str = "kumo.vxlan";
/// The VXLAN network identifier.
pub const VXLAN_VNI: u32 = 1;
/// The UDP port VXLAN packets go to (the Linux kernel's and flannel's, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN adds to each packet (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// How a node reaches the pods of the others (`--pod-network-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
    HostGw,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            _ => Err(format!(
                "{s:?} is not a pod network backend (vxlan or host-gw)"
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        })
    }
}

/// A node as the pod network sees it: its name, the address the others reach it at, and its
/// pod CIDR (unparsed: a bad one is reported, not fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub address: IpAddr,
    pub pod_cidr: String,
}

/// A route to a remote node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRoute {
    /// The remote pod CIDR (address, prefix).
    pub dst: (IpAddr, u8),
    /// The next hop: the remote VTEP's gateway (vxlan, onlink on the device) or the node's
    /// address (host-gw).
    pub via: IpAddr,
}

/// A forwarding entry of the VXLAN device: frames to `mac` go in UDP to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: IpAddr,
}

/// A permanent neighbour entry on the VXLAN device: `ip` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// Everything one node should have to reach the others' pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeSet<PodRoute>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<NeighbourEntry>,
    /// Nodes left out, with why (shown as warnings and Events: never a silently wrong route).
    pub problems: Vec<String>,
}

/// The MAC of node `name`'s VTEP: locally administered, unicast, from a hash of the name (FNV-1a),
/// so that every node computes every other's without asking.
pub fn vtep_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x0e: locally administered (bit 1), unicast (bit 0 clear).
    [0x0e, b[3], b[4], b[5], b[6], b[7]]
}

/// `aa:bb:…` as the `kumo.dev/vxlan-mac` annotation and `ip` write it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The VTEP gateway address of a node with pod CIDR `cidr`: its first address (flannel's).
pub fn vtep_gateway(cidr: &str) -> Result<IpAddr, String> {
    Cidr::parse(cidr).map(|c| c.addr)
}

/// What node `local` should program to reach the pods of `peers` (which may include itself).
pub fn desired(backend: Backend, local: &PeerNode, peers: &[PeerNode]) -> Desired {
    let mut out = Desired::default();
    let local_cidr = Cidr::parse(&local.pod_cidr).ok();
    // Two nodes at one address cannot both be right: neither gets routes.
    let mut at: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for p in peers.iter().filter(|p| p.name != local.name) {
        at.entry(p.address).or_default().push(&p.name);
    }
    let mut taken: Vec<(Cidr, &str)> = local_cidr
        .iter()
        .map(|c| (*c, local.name.as_str()))
        .collect();
    let mut sorted: Vec<&PeerNode> = peers.iter().filter(|p| p.name != local.name).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for p in sorted {
        if p.address == local.address {
            out.problems.push(format!(
                "node {} has this node's address {}: no route to its pods",
                p.name, p.address
            ));
            continue;
        }
        let sharing = &at[&p.address];
        if sharing.len() > 1 {
            out.problems.push(format!(
                "nodes {} share the address {}: no route to their pods",
                sharing.join(", "),
                p.address
            ));
            continue;
        }
        let cidr = match Cidr::parse(&p.pod_cidr) {
            Ok(c) => c,
            Err(e) => {
                out.problems
                    .push(format!("node {} has a bad pod CIDR: {e}", p.name));
                continue;
            }
        };
        if let Some((_, owner)) = taken.iter().find(|(t, _)| overlaps(t, &cidr)) {
            out.problems.push(format!(
                "node {}'s pod CIDR {cidr} overlaps node {owner}'s: no route to its pods",
                p.name
            ));
            continue;
        }
        taken.push((cidr, &p.name));
        let dst = (cidr.addr, cidr.prefix);
        match backend {
            Backend::HostGw => {
                out.routes.insert(PodRoute {
                    dst,
                    via: p.address,
                });
            }
            Backend::Vxlan => {
                let mac = vtep_mac(&p.name);
                out.fdb.insert(FdbEntry {
                    mac,
                    dst: p.address,
                });
                out.neighbours.insert(NeighbourEntry { ip: cidr.addr, mac });
                out.routes.insert(PodRoute {
                    dst,
                    via: cidr.addr,
                });
            }
        }
    }
    out
}

fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    let range = |c: &Cidr| -> Option<(u128, u128)> {
        let (bits, max) = match c.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host = 1u128
            .checked_shl(max - u32::from(c.prefix))
            .map_or(u128::MAX, |b| b - 1);
        Some((bits, bits | host))
    };
    if a.addr.is_ipv4() != b.addr.is_ipv4() {
        return false;
    }
    match (range(a), range(b)) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str, cidr: &str) -> PeerNode {
        PeerNode {
            name: name.into(),
            address: address.parse().unwrap(),
            pod_cidr: cidr.into(),
        }
    }

    /// The entries as `ip` would print them, one string each, plus the problems.
    fn check(backend: Backend, peers: &[PeerNode], expected: &[&str]) {
        let got = desired(backend, &peers[0], peers);
        let mut lines: Vec<String> = Vec::new();
        for r in &got.routes {
            let onlink = match backend {
                Backend::Vxlan => " onlink dev kumo.vxlan",
                Backend::HostGw => "",
            };
            lines.push(format!(
                "route {}/{} via {}{onlink}",
                r.dst.0, r.dst.1, r.via
            ));
        }
        for f in &got.fdb {
            lines.push(format!("fdb {} dst {}", format_mac(&f.mac), f.dst));
        }
        for n in &got.neighbours {
            lines.push(format!("neigh {} lladdr {}", n.ip, format_mac(&n.mac)));
        }
        for p in &got.problems {
            lines.push(format!("problem: {p}"));
        }
        // Compared as sets of lines: each kind's order is that of its set.
        lines.sort();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(lines, expected);
    }

    #[test]
    fn vxlan_entries_per_remote_node() {
        let a = format_mac(&vtep_mac("b"));
        let c = format_mac(&vtep_mac("c"));
        let want = [
            "route 10.88.1.0/24 via 10.88.1.0 onlink dev kumo.vxlan".to_string(),
            "route 10.88.2.0/24 via 10.88.2.0 onlink dev kumo.vxlan".to_string(),
            format!("fdb {a} dst 192.168.77.2"),
            format!("fdb {c} dst 192.168.77.3"),
            format!("neigh 10.88.1.0 lladdr {a}"),
            format!("neigh 10.88.2.0 lladdr {c}"),
        ];
        check(
            Backend::Vxlan,
            &[
                node("a", "192.168.77.1", "10.88.0.0/24"),
                node("c", "192.168.77.3", "10.88.2.0/24"),
                node("b", "192.168.77.2", "10.88.1.0/24"),
            ],
            &want.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn host_gw_routes_via_node_addresses() {
        check(
            Backend::HostGw,
            &[
                node("a", "192.168.77.1", "10.88.0.0/24"),
                node("b", "192.168.77.2", "10.88.1.0/24"),
            ],
            &["route 10.88.1.0/24 via 192.168.77.2"],
        );
        // Alone: nothing to reach.
        check(
            Backend::HostGw,
            &[node("a", "192.168.77.1", "10.88.0.0/24")],
            &[],
        );
    }

    #[test]
    fn conflicting_nodes_get_no_route_and_are_named() {
        check(
            Backend::HostGw,
            &[
                node("a", "192.168.77.1", "10.88.0.0/24"),
                node("b", "192.168.77.1", "10.88.1.0/24"),
                node("c", "192.168.77.3", "10.88.0.128/25"),
                node("d", "192.168.77.4", "nonsense"),
                node("e", "192.168.77.5", "10.88.5.0/24"),
                node("f", "192.168.77.5", "10.88.6.0/24"),
                node("g", "192.168.77.7", "10.88.7.0/24"),
            ],
            &[
                "route 10.88.7.0/24 via 192.168.77.7",
                "problem: node b has this node's address 192.168.77.1: no route to its pods",
                "problem: node c's pod CIDR 10.88.0.128/25 overlaps node a's: no route to its pods",
                "problem: node d has a bad pod CIDR: \"nonsense\" is not a CIDR (want address/prefix)",
                "problem: nodes e, f share the address 192.168.77.5: no route to their pods",
                "problem: nodes e, f share the address 192.168.77.5: no route to their pods",
            ],
        );
    }

    #[test]
    fn vtep_macs_are_stable_local_unicast_and_distinct() {
        assert_eq!(vtep_mac("node-1"), vtep_mac("node-1"));
        assert_ne!(vtep_mac("node-1"), vtep_mac("node-2"));
        let m = vtep_mac("anything");
        assert_eq!(m[0] & 0b11, 0b10);
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert_eq!(
            "flannel".parse::<Backend>(),
            Err("\"flannel\" is not a pod network backend (vxlan or host-gw)".to_string())
        );
    }
}
