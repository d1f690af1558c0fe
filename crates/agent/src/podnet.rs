//! This node's place in the pod network across nodes: the pod CIDR it uses (its Node's
//! `spec.podCIDR`, given by the control plane's node IPAM, else `--pod-cidr`), and the loop that
//! programs the routes to the other nodes' pods from the Node objects it watches (through
//! kumo-net's netlink [`kumo_net::Links`]; the decisions are [`kumo_net::desired`]).

use kumo_api::Node;
use kumo_client::{
    Change, Client, ClientError, EventRecorder, EventType, Failure, Informer, ListParams, Pass,
    Passed, Retry,
};
use kumo_net::{Backend, Links, PeerNode};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Event reason on this node's Node for a node its pod network leaves out (two nodes at one
/// address, overlapping pod CIDRs, a bad one).
pub const REASON_POD_NETWORK_CONFLICT: &str = "PodNetworkConflict";

/// How long an agent without `--pod-cidr` waits for the control plane to give its Node one.
pub const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

/// Why this node's pod CIDR could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum PodCidrError {
    /// The Node could not be read.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `--pod-cidr` names another range than the one the Node already has.
    #[error("--pod-cidr {configured} differs from node {node}'s spec.podCIDR {assigned} (the pod CIDR the cluster gave it): start the agent with --pod-cidr {assigned}, or without --pod-cidr")]
    Mismatch {
        node: String,
        configured: String,
        assigned: String,
    },
}

/// The pod CIDR of node `name`: its Node's when it has one (an agent started with another
/// `--pod-cidr` is refused: its pods would get addresses the other nodes route elsewhere);
/// else `configured` at once; else the Node's once the control plane gives it one, waiting up
/// to `wait` (`None` after that: the agent falls back to kumo-net's default, with a warning). A
/// node in no pod network across nodes (`across` false: `kumo up` alone) keeps `configured`
/// whatever its Node says, so that its bridge's range never changes under its running pods.
pub async fn resolve_pod_cidr(
    client: &Client,
    name: &str,
    configured: Option<&str>,
    across: bool,
    wait: Duration,
) -> Result<Option<String>, PodCidrError> {
    if let (false, Some(c)) = (across, configured) {
        return Ok(Some(c.to_string()));
    }
    let deadline = Instant::now() + wait;
    loop {
        let node = client.get_opt::<Node>("", name).await?;
        let assigned = node.as_ref().and_then(|n| n.spec.pod_cidr());
        if let Some(cidr) = choose_pod_cidr(name, assigned, configured)? {
            return Ok(Some(cidr));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod CIDR from the Node's (`assigned`) and the agent's flag (`configured`): the Node's
/// when they agree or there is no flag, the flag's when the Node has none yet.
pub fn choose_pod_cidr(
    node: &str,
    assigned: Option<&str>,
    configured: Option<&str>,
) -> Result<Option<String>, PodCidrError> {
    match (assigned, configured) {
        (Some(a), Some(c)) if !same_network(a, c) => Err(PodCidrError::Mismatch {
            node: node.to_string(),
            configured: c.to_string(),
            assigned: a.to_string(),
        }),
        (Some(a), _) => Ok(Some(a.to_string())),
        (None, c) => Ok(c.map(str::to_string)),
    }
}

/// Whether two CIDRs name one network (`10.1.0.0/24` and ` 10.1.0.0/24`, or written with
/// another IPv6 spelling); compared as text when either does not parse.
fn same_network(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ip, len) = s.trim().split_once('/')?;
        Some((ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?))
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// A Node as the pod network sees it: its name, InternalIP and pod CIDR, if it has both.
pub fn peer(node: &Node) -> Option<PeerNode> {
    let address: IpAddr = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some(PeerNode {
        name: node.metadata.name.clone(),
        address,
        pod_cidr: node.spec.pod_cidr()?.to_string(),
    })
}

/// The MTU pods get on `backend` when the node's address is on a link of MTU `link_mtu`.
pub fn pod_mtu(backend: Backend, link_mtu: u32) -> u32 {
    match backend {
        Backend::Vxlan => link_mtu.saturating_sub(kumo_net::VXLAN_OVERHEAD),
        Backend::HostGw => link_mtu,
    }
}

/// Programs routes to every other node's pods until `shutdown`, from every change of a Node,
/// through `links` (a netlink connection in the node's network namespace).
pub async fn run(
    client: Client,
    backend: Backend,
    local: PeerNode,
    links: Links,
    shutdown: impl Future<Output = ()> + Send,
) {
    let recorder = EventRecorder::new(client.clone(), "kumo-agent", Some(&local.name));
    let (nodes, changes) = Informer::<Node>::start(client, None, ListParams::default());
    // Heartbeats wake it too: the cooldown gathers them, and a pass that finds the kernel as
    // wanted only reads (three dumps).
    let runtime = Pass::new(Duration::from_millis(500), Duration::from_secs(30))
        .waits_for(nodes.clone())
        .feeds_with(changes, |_: &Change<Node>| true)
        .cooldown(Duration::from_millis(100), Duration::from_secs(1));
    let told: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let (links, nodes, local, told, recorder) = (&links, &nodes, &local, &told, &recorder);
    let each = move || async move {
        let peers: Vec<PeerNode> = nodes.list().iter().filter_map(peer).collect();
        let want = kumo_net::desired(backend, local, &peers);
        // Each problem is said once (a warning and an Event on this node), not every pass.
        let new: Vec<String> = {
            let mut told = told.lock().unwrap_or_else(|e| e.into_inner());
            told.retain(|p| want.problems.contains(p));
            want.problems
                .iter()
                .filter(|p| told.insert((*p).clone()))
                .cloned()
                .collect()
        };
        for p in new {
            tracing::warn!(node = %local.name, "pod network: {p}");
            if let Some(me) = nodes.get(&local.name) {
                recorder
                    .record(&me, EventType::Warning, REASON_POD_NETWORK_CONFLICT, p)
                    .await;
            }
        }
        let vxlan = match backend {
            Backend::Vxlan => {
                let mtu = links.mtu_of_address(local.address).await?.unwrap_or(1500);
                Some(links.ensure_vxlan(local, mtu).await?)
            }
            Backend::HostGw => {
                // Left by an earlier run on vxlan.
                links.remove_vxlan().await?;
                None
            }
        };
        let applied = links.apply(backend, vxlan, &want).await?;
        if applied != kumo_net::Applied::default() {
            tracing::info!(node = %local.name, %backend, added = applied.added, removed = applied.removed, routes = want.routes.len(), "pod network routes updated");
        }
        Ok::<_, kumo_net::NetError>(Passed {
            // A route removed by someone else comes back within this.
            requeue_after: Some(Duration::from_secs(60)),
            ..Passed::default()
        })
    };
    runtime.run(each, report, shutdown).await
}

fn report(_: &(), failure: &Failure<kumo_net::NetError>, retry: &Retry) {
    tracing::warn!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "pod network reconcile failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(node: serde_json::Value, expected: Option<(&str, &str)>) {
        let node: Node = serde_json::from_value(node).unwrap();
        let got = peer(&node);
        assert_eq!(
            got.as_ref()
                .map(|p| (p.address.to_string(), p.pod_cidr.clone())),
            expected.map(|(a, c)| (a.to_string(), c.to_string()))
        );
    }

    #[test]
    fn peers_need_an_internal_ip_and_a_pod_cidr() {
        let addresses = json!([{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.77.2"}]);
        check(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.88.1.0/24"}, "status": {"addresses": addresses}}),
            Some(("192.168.77.2", "10.88.1.0/24")),
        );
        check(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.88.1.0/24"]}, "status": {"addresses": addresses}}),
            Some(("192.168.77.2", "10.88.1.0/24")),
        );
        check(
            json!({"metadata": {"name": "n1"}, "status": {"addresses": addresses}}),
            None,
        );
        check(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.88.1.0/24"}}),
            None,
        );
        check(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.88.1.0/24"}, "status": {"addresses": [{"type": "InternalIP", "address": "not-an-ip"}]}}),
            None,
        );
    }

    #[test]
    fn the_nodes_pod_cidr_wins_and_another_flag_is_refused() {
        let check = |assigned: Option<&str>,
                     configured: Option<&str>,
                     expected: Result<Option<&str>, &str>| {
            let got = choose_pod_cidr("n1", assigned, configured).map_err(|e| e.to_string());
            assert_eq!(
                got,
                expected
                    .map(|c| c.map(str::to_string))
                    .map_err(str::to_string),
                "{assigned:?} {configured:?}"
            );
        };
        check(None, None, Ok(None));
        check(None, Some("10.1.0.0/24"), Ok(Some("10.1.0.0/24")));
        check(Some("10.88.1.0/24"), None, Ok(Some("10.88.1.0/24")));
        check(
            Some("10.88.1.0/24"),
            Some("10.88.1.0/24"),
            Ok(Some("10.88.1.0/24")),
        );
        check(
            Some("fd00::/64"),
            Some("fd00:0::/64"),
            Ok(Some("fd00::/64")),
        );
        check(
            Some("10.88.1.0/24"),
            Some("10.1.0.0/24"),
            Err("--pod-cidr 10.1.0.0/24 differs from node n1's spec.podCIDR 10.88.1.0/24 (the pod CIDR the cluster gave it): start the agent with --pod-cidr 10.88.1.0/24, or without --pod-cidr"),
        );
        check(
            Some("10.88.1.0/24"),
            Some("10.88.1.0/25"),
            Err("--pod-cidr 10.88.1.0/25 differs from node n1's spec.podCIDR 10.88.1.0/24 (the pod CIDR the cluster gave it): start the agent with --pod-cidr 10.88.1.0/24, or without --pod-cidr"),
        );
    }

    #[test]
    fn pod_mtu_leaves_room_for_vxlan() {
        assert_eq!(pod_mtu(Backend::Vxlan, 1500), 1450);
        assert_eq!(pod_mtu(Backend::HostGw, 1500), 1500);
        assert_eq!(pod_mtu(Backend::Vxlan, 9000), 8950);
    }
}
