//! Node IPAM: each Node gets its own slice of the cluster CIDR in `spec.podCIDR`, as
//! Kubernetes' range allocator does (`--cluster-cidr`, `--node-cidr-mask-size`).
//!
//! The used slices are read from the Nodes themselves every pass (a deleted Node's slice is free
//! again at once), plus the ones this loop wrote and its cache may not show yet; a pure [`plan`]
//! gives each Node without a slice the lowest free one, in name order.

use kumo_api::cidr::Cidr;
use kumo_api::Node;
use kumo_client::{
    Change, Client, ClientError, EventRecorder, EventType, Failure, Informer, ListParams, Pass,
    Passed, Retry,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Event reason when the cluster CIDR has no free slice left (Kubernetes' name).
pub const REASON_CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// Event reason when a Node was given its slice.
pub const REASON_CIDR_ASSIGNED: &str = "PodCIDRAssigned";

/// The cluster CIDR cut into node slices of one prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    pub cluster: Cidr,
    pub mask: u8,
}

impl ClusterCidr {
    /// Checks the flags; the error names the one at fault.
    pub fn new(cluster: &str, mask: u8) -> Result<ClusterCidr, String> {
        let cluster = Cidr::parse(cluster).map_err(|e| format!("--cluster-cidr: {e}"))?;
        if mask < cluster.prefix() {
            return Err(format!(
                "--node-cidr-mask-size: /{mask} is larger than the cluster CIDR {cluster} (want /{} or longer)",
                cluster.prefix()
            ));
        }
        // A node needs its gateway (the slice's first host) and at least one pod.
        let longest = cluster.max_prefix() - 2;
        if mask > longest {
            return Err(format!(
                "--node-cidr-mask-size: /{mask} leaves no room for pods (at most /{longest})"
            ));
        }
        Ok(ClusterCidr { cluster, mask })
    }

    /// How many node slices the cluster CIDR holds (saturating).
    pub fn capacity(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.mask - self.cluster.prefix()))
            .unwrap_or(u128::MAX)
    }

    fn block(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.cluster.max_prefix() - self.mask))
            .unwrap_or(u128::MAX)
    }

    /// The lowest slice that overlaps none of `used`.
    pub fn next_free(&self, used: &[Cidr]) -> Option<Cidr> {
        let (first, last) = (self.cluster.first(), self.cluster.last());
        let mut used: Vec<(u128, u128)> = used
            .iter()
            .filter(|u| u.overlaps(&self.cluster))
            .map(|u| (u.first().max(first), u.last().min(last)))
            .collect();
        used.sort();
        let block = self.block();
        let mut candidate = first;
        for (start, end) in used {
            if candidate.checked_add(block - 1)? < start {
                break;
            }
            if end >= candidate {
                // The next slice boundary after `end`.
                let next = (end - first) / block + 1;
                candidate = first.checked_add(next.checked_mul(block)?)?;
            }
        }
        let candidate_last = candidate.checked_add(block - 1)?;
        (candidate_last <= last)
            .then(|| Cidr::from_bits(self.cluster.is_ipv4(), candidate, self.mask))
    }
}

/// Refuses a cluster CIDR that overlaps one of the host's own networks (`(link, network)`).
pub fn check_host_overlap(cluster: &Cidr, host: &[(String, Cidr)]) -> Result<(), String> {
    match host.iter().find(|(_, net)| net.overlaps(cluster)) {
        Some((link, net)) => Err(format!(
            "--cluster-cidr: {cluster} overlaps this host's network {net} on {link}"
        )),
        None => Ok(()),
    }
}

/// What one pass does: slices to write, and the Nodes left without one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub assign: Vec<(String, Cidr)>,
    pub exhausted: Vec<String>,
}

/// Gives each Node without a pod CIDR (`None`) the lowest free slice, in name order; the
/// slices of the others (valid ones, inside the cluster CIDR or not) are taken.
pub fn plan(range: &ClusterCidr, nodes: &BTreeMap<String, Option<String>>) -> Plan {
    let mut used: Vec<Cidr> = nodes
        .values()
        .flatten()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect();
    let mut out = Plan::default();
    for (name, cidr) in nodes {
        if cidr.is_some() {
            continue;
        }
        match range.next_free(&used) {
            Some(slice) => {
                used.push(slice);
                out.assign.push((name.clone(), slice));
            }
            None => out.exhausted.push(name.clone()),
        }
    }
    out
}

/// What the loop remembers between passes.
#[derive(Default)]
struct Memory {
    /// Slices this loop wrote, until its cache shows them (or their Node is gone).
    written: BTreeMap<String, String>,
    /// Nodes already told that no slice is left (one Event each, not one per heartbeat).
    told_exhausted: BTreeSet<String>,
}

/// Runs the node IPAM controller until `shutdown`.
pub async fn run(client: Client, range: ClusterCidr, shutdown: impl Future<Output = ()> + Send) {
    let (nodes, changes) = Informer::<Node>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-node-ipam", None);
    // Only a Node without a slice, or a deleted one (its slice is free again), matters.
    let runtime = Pass::new(RETRY_BASE, RETRY_MAX)
        .waits_for(nodes.clone())
        .feeds_with(changes, |c: &Change<Node>| match c {
            Change::Applied(n) => n.spec.pod_cidr().is_none(),
            Change::Deleted(_) => true,
        });
    let memory = Mutex::new(Memory::default());
    let (client, recorder, nodes, memory) = (&client, &recorder, &nodes, &memory);
    let each = move || async move {
        pass(client, recorder, nodes, memory, &range).await?;
        Ok::<_, ClientError>(Passed::default())
    };
    runtime.run(each, report, shutdown).await
}

fn report(_: &(), failure: &Failure<ClientError>, retry: &Retry) {
    tracing::warn!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "node ipam pass failed");
}

async fn pass(
    client: &Client,
    recorder: &EventRecorder,
    nodes: &Informer<Node>,
    memory: &Mutex<Memory>,
    range: &ClusterCidr,
) -> Result<(), ClientError> {
    let listed = nodes.list();
    let plan = {
        let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
        let present: BTreeSet<&str> = listed.iter().map(|n| n.metadata.name.as_str()).collect();
        m.written.retain(|name, _| present.contains(name.as_str()));
        m.told_exhausted
            .retain(|name| present.contains(name.as_str()));
        let view: BTreeMap<String, Option<String>> = listed
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone();
                let cidr = n
                    .spec
                    .pod_cidr()
                    .map(str::to_string)
                    .or_else(|| m.written.get(&name).cloned());
                (name, cidr)
            })
            .collect();
        plan(range, &view)
    };
    for (name, slice) in plan.assign {
        if let Some(node) = assign(client, &name, slice).await? {
            memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .written
                .insert(name.clone(), slice.to_string());
            tracing::info!(node = %name, pod_cidr = %slice, "pod CIDR assigned");
            recorder
                .record(
                    &node,
                    EventType::Normal,
                    REASON_CIDR_ASSIGNED,
                    format!("node {name} was given pod CIDR {slice}"),
                )
                .await;
        }
    }
    for name in plan.exhausted {
        let first = memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .told_exhausted
            .insert(name.clone());
        if let (true, Some(node)) = (first, nodes.get(&name)) {
            let message = format!(
                "node {name} has no pod CIDR: all {} /{} slices of the cluster CIDR {} are in use",
                range.capacity(),
                range.mask,
                range.cluster
            );
            tracing::warn!(node = %name, "{message}");
            recorder
                .record(
                    &node,
                    EventType::Warning,
                    REASON_CIDR_NOT_AVAILABLE,
                    message,
                )
                .await;
        }
    }
    Ok(())
}

/// How often `assign` reads the Node again after a conflict before the pass gives up.
const CONFLICT_RETRIES: usize = 10;

/// Writes `slice` into the freshest Node `name` unless it has one by now; the Node written.
async fn assign(client: &Client, name: &str, slice: Cidr) -> Result<Option<Node>, ClientError> {
    let mut tries = 0;
    loop {
        let Some(mut node) = client.get_opt::<Node>("", name).await? else {
            return Ok(None);
        };
        if node.spec.pod_cidr().is_some() {
            return Ok(None);
        }
        node.spec.pod_cidr = Some(slice.to_string());
        node.spec.pod_cidrs = vec![slice.to_string()];
        match client.update(&node).await {
            Ok(written) => return Ok(Some(written)),
            // The agent's heartbeats write the Node every interval: a conflict is read again at
            // once, not left to the pass's back-off (which grows to 30 s while they race).
            Err(e) if e.is_conflict() && tries < CONFLICT_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        cluster: &str,
        mask: u8,
        nodes: &[(&str, Option<&str>)],
        expected: &[(&str, &str)],
        exhausted: &[&str],
    ) {
        let range = ClusterCidr::new(cluster, mask).unwrap();
        let nodes = nodes
            .iter()
            .map(|(n, c)| (n.to_string(), c.map(str::to_string)))
            .collect();
        let got = plan(&range, &nodes);
        let assign: Vec<(String, String)> = got
            .assign
            .iter()
            .map(|(n, c)| (n.clone(), c.to_string()))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect();
        assert_eq!(assign, want, "{cluster} /{mask} {nodes:?}");
        assert_eq!(got.exhausted, exhausted, "{cluster} /{mask} {nodes:?}");
    }

    #[test]
    fn nodes_get_the_lowest_free_slice_in_name_order() {
        check("10.88.0.0/16", 24, &[], &[], &[]);
        check(
            "10.88.0.0/16",
            24,
            &[("b", None), ("a", None), ("c", Some("10.88.0.0/24"))],
            &[("a", "10.88.1.0/24"), ("b", "10.88.2.0/24")],
            &[],
        );
        // A freed slice (its Node deleted) is the next one handed out.
        check(
            "10.88.0.0/16",
            24,
            &[
                ("a", Some("10.88.0.0/24")),
                ("c", Some("10.88.2.0/24")),
                ("d", None),
            ],
            &[("d", "10.88.1.0/24")],
            &[],
        );
        // A wider slice (an agent's own --pod-cidr) takes every slice it overlaps.
        check(
            "10.88.0.0/16",
            24,
            &[("up", Some("10.88.0.0/20")), ("x", None)],
            &[("x", "10.88.16.0/24")],
            &[],
        );
        // Slices outside the cluster CIDR, and unparsable ones, take nothing inside it.
        check(
            "10.88.0.0/16",
            24,
            &[
                ("a", Some("192.168.0.0/24")),
                ("b", Some("bogus")),
                ("c", None),
            ],
            &[("c", "10.88.0.0/24")],
            &[],
        );
        check(
            "fd00:88::/48",
            64,
            &[("a", Some("fd00:88::/64")), ("b", None)],
            &[("b", "fd00:88:0:1::/64")],
            &[],
        );
    }

    #[test]
    fn an_exhausted_cluster_cidr_leaves_the_rest_without() {
        check(
            "10.88.0.0/23",
            24,
            &[("a", None), ("b", None), ("c", None), ("d", None)],
            &[("a", "10.88.0.0/24"), ("b", "10.88.1.0/24")],
            &["c", "d"],
        );
        // The whole cluster CIDR on one node (kumo up's default) leaves none for the next.
        check(
            "10.88.0.0/16",
            24,
            &[("up", Some("10.88.0.0/16")), ("x", None)],
            &[],
            &["x"],
        );
        check(
            "10.88.0.0/24",
            24,
            &[("a", None), ("b", None)],
            &[("a", "10.88.0.0/24")],
            &["b"],
        );
    }

    #[test]
    fn flags_are_checked() {
        let err = |c: &str, m: u8| ClusterCidr::new(c, m).unwrap_err();
        assert_eq!(
            err("10.88.0.0/16", 8),
            "--node-cidr-mask-size: /8 is larger than the cluster CIDR 10.88.0.0/16 (want /16 or longer)"
        );
        assert_eq!(
            err("10.88.0.0/16", 31),
            "--node-cidr-mask-size: /31 leaves no room for pods (at most /30)"
        );
        assert_eq!(
            err("10.88.0.1/16", 24),
            "--cluster-cidr: 10.88.0.1/16 has host bits set"
        );
        assert_eq!(
            ClusterCidr::new("10.88.0.0/16", 24).unwrap().capacity(),
            256
        );
        assert_eq!(
            ClusterCidr::new("::/0", 64).unwrap().capacity(),
            1u128 << 64
        );
    }

    #[test]
    fn host_networks_may_not_overlap() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let host = vec![
            ("lo".to_string(), c("127.0.0.0/8")),
            ("eth0".to_string(), c("10.0.0.0/8")),
        ];
        assert_eq!(check_host_overlap(&c("192.168.0.0/16"), &host), Ok(()));
        assert_eq!(
            check_host_overlap(&c("10.88.0.0/16"), &host),
            Err(
                "--cluster-cidr: 10.88.0.0/16 overlaps this host's network 10.0.0.0/8 on eth0"
                    .to_string()
            )
        );
    }
}
