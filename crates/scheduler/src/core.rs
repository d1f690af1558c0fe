//! The pure placement core: filter nodes that fit a pod, score them, pick one, or explain why none.

use crate::cluster::Cluster;
use kumo_api::keys::{LABEL_APP, LABEL_PROCESS};
use kumo_api::node::Taint;
use kumo_api::pod::{TaintEffect, Toleration, TolerationOperator};
use kumo_api::{ConditionStatus, Node, Pod, GPU_RESOURCE};
use std::collections::BTreeMap;

/// Amounts of the resources the scheduler counts, in milli-units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub gpus: i128,
    pub pods: i128,
}

impl Resources {
    /// What a pod asks for (requests, defaulting to limits), counting itself as one pod.
    pub fn of_pod(pod: &Pod) -> Self {
        Resources {
            cpu: pod.spec.request_millis("cpu"),
            memory: pod.spec.request_millis("memory"),
            gpus: pod.spec.request_millis(GPU_RESOURCE),
            pods: 1000,
        }
    }

    /// A node's allocatable resources.
    pub fn allocatable(node: &Node) -> Self {
        let alloc = node.status.as_ref().map(|s| &s.allocatable);
        let get = |k: &str| alloc.and_then(|a| a.get(k)).map_or(0, |q| q.millis());
        Resources {
            cpu: get("cpu"),
            memory: get("memory"),
            gpus: get(GPU_RESOURCE),
            pods: get("pods"),
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.gpus += other.gpus;
        self.pods += other.pods;
    }
}

/// A node as the scheduler sees it: what it offers and what is already bound to it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub runtime_classes: Vec<String>,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Replicas on this node of each spread group (see [`spread_key`]).
    pub spread: BTreeMap<String, u32>,
}

impl NodeView {
    pub fn new(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == ConditionStatus::True);
        NodeView {
            name: node.metadata.name.clone(),
            labels: node.metadata.labels.clone(),
            taints: node.spec.taints.clone(),
            unschedulable: node.spec.unschedulable,
            ready,
            runtime_classes: status
                .map(|s| s.runtime_classes.clone())
                .unwrap_or_default(),
            allocatable: Resources::allocatable(node),
            requested: Resources::default(),
            spread: BTreeMap::new(),
        }
    }
}

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Prefer the least allocated node (spread load), kube-scheduler's default.
    #[default]
    Spread,
    /// Prefer the most allocated node (pack work, keep whole nodes free).
    BinPack,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::BinPack),
            _ => Err(format!(
                "unknown scheduling strategy {s:?}: use spread or binpack"
            )),
        }
    }
}

/// Why no node fits, in kube-scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: String,
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.is_none_or(|e| e == taint.effect);
        let key_ok = t.key.as_deref().is_none_or(|k| k == taint.key);
        let value_ok = match t.operator.unwrap_or(TolerationOperator::Equal) {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => {
                t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        effect_ok && key_ok && value_ok
    })
}

fn selector_matches(pod: &Pod, node: &NodeView) -> bool {
    pod.spec
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
}

fn untolerated_taint<'a>(pod: &Pod, node: &'a NodeView) -> Option<&'a Taint> {
    node.taints
        .iter()
        .find(|t| t.effect == TaintEffect::NoSchedule && !tolerates(&pod.spec.tolerations, t))
}

fn runtime_supported(pod: &Pod, node: &NodeView) -> bool {
    pod.spec
        .runtime_class_name
        .as_ref()
        .is_none_or(|rc| node.runtime_classes.contains(rc))
}

/// Per resource: whether `want` fits in what `node` has left (a zero request always fits).
fn resource_fits(want: &Resources, node: &NodeView) -> [bool; 4] {
    let (a, r) = (&node.allocatable, &node.requested);
    let ok = |want: i128, alloc: i128, used: i128| want <= 0 || want <= alloc - used;
    [
        want.pods <= a.pods - r.pods,
        ok(want.cpu, a.cpu, r.cpu),
        ok(want.memory, a.memory, r.memory),
        ok(want.gpus, a.gpus, r.gpus),
    ]
}

/// Whether `node` can take `pod`: [`misfits`] is empty, without building its messages. This is
/// the per-node check of every placement, so it allocates nothing, and it tests the integer
/// resource checks before the label lookups (the order only matters to `misfits`' message).
pub fn fits(pod: &Pod, want: &Resources, node: &NodeView) -> bool {
    node.ready
        && !node.unschedulable
        && resource_fits(want, node) == [true; 4]
        && untolerated_taint(pod, node).is_none()
        && runtime_supported(pod, node)
        && selector_matches(pod, node)
}

/// The reasons `node` cannot take `pod`; empty when it fits.
pub fn misfits(pod: &Pod, want: &Resources, node: &NodeView) -> Vec<String> {
    if !node.ready {
        return vec!["node(s) were not ready".into()];
    }
    if node.unschedulable {
        return vec!["node(s) were unschedulable".into()];
    }
    if !selector_matches(pod, node) {
        return vec!["node(s) didn't match node selector".into()];
    }
    if let Some(t) = untolerated_taint(pod, node) {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )];
    }
    if let Some(rc) = pod.spec.runtime_class_name.as_ref() {
        if !runtime_supported(pod, node) {
            return vec![format!("node(s) didn't support runtime class {rc:?}")];
        }
    }
    let names = [
        "Too many pods".to_string(),
        "Insufficient cpu".to_string(),
        "Insufficient memory".to_string(),
        format!("Insufficient {GPU_RESOURCE}"),
    ];
    resource_fits(want, node)
        .into_iter()
        .zip(names)
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect()
}

/// Why `pod` fits on none of `nodes`, counted over every node in kube-scheduler's words.
pub fn explain(pod: &Pod, want: &Resources, nodes: &[NodeView]) -> Unschedulable {
    if nodes.is_empty() {
        return Unschedulable {
            message: "0/0 nodes are available: no nodes registered".into(),
        };
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        for r in misfits(pod, want, node) {
            *reasons.entry(r).or_default() += 1;
        }
    }
    let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Unschedulable {
        message: format!(
            "0/{} nodes are available: {}",
            nodes.len(),
            detail.join(", ")
        ),
    }
}

/// `part * 100 / whole`, dividing in 64 bits when the values allow: a 128-bit division is a
/// slow library call, and this runs for every node a search scores.
fn percent(part: i128, whole: i128) -> i128 {
    let num = part * 100;
    match (i64::try_from(num), i64::try_from(whole)) {
        (Ok(n), Ok(w)) => i128::from(n / w),
        _ => num / whole,
    }
}

/// Scores a fitting node from 0 to 100: higher is better under `strategy`.
pub fn score(want: &Resources, node: &NodeView, strategy: Strategy) -> i128 {
    let (a, r) = (&node.allocatable, &node.requested);
    // (allocatable, requested, asked, counted): GPUs count only for pods that ask for them.
    let parts = [
        (a.cpu, r.cpu, want.cpu, true),
        (a.memory, r.memory, want.memory, true),
        (a.gpus, r.gpus, want.gpus, want.gpus > 0),
    ];
    let (mut sum, mut count) = (0i128, 0i128);
    for (alloc, used, add, counted) in parts {
        if counted && alloc > 0 {
            sum += percent(used + add, alloc).clamp(0, 100);
            count += 1;
        }
    }
    let avg_used = if count == 0 { 0 } else { sum / count };
    match strategy {
        Strategy::Spread => 100 - avg_used,
        Strategy::BinPack => avg_used,
    }
}

/// The spread group of a pod: replicas of one app process (`ns/app/process`), which the
/// scheduler places on the zones, then the nodes, holding the fewest of them.
pub fn spread_key(pod: &Pod) -> Option<String> {
    let labels = &pod.metadata.labels;
    let app = labels.get(LABEL_APP)?;
    let process = labels.get(LABEL_PROCESS)?;
    Some(format!("{}/{app}/{process}", pod.metadata.ns()))
}

/// Chooses a node for `pod` among every node (no sampling; the loop samples through
/// [`Cluster::place`]); ties go to the first node by name, so placement is deterministic.
/// Replicas of one app process go first to the zone, then the node, with the fewest of them.
pub fn place(pod: &Pod, nodes: &[NodeView], strategy: Strategy) -> Result<usize, Unschedulable> {
    Cluster::new(nodes.to_vec()).place(pod, strategy)
}

/// Places every member of a gang at once, or none of them: one node index per member, in order.
/// Members are placed one after another on views that count the members placed before them.
pub fn place_gang(
    members: &[&Pod],
    nodes: &[NodeView],
    strategy: Strategy,
) -> Result<Vec<usize>, Unschedulable> {
    // Every node is considered (no sampling): gangs are few and their placement is packed.
    let mut views = Cluster::new(nodes.to_vec());
    let mut placed = Vec::with_capacity(members.len());
    for (i, pod) in members.iter().enumerate() {
        match views.place(pod, strategy) {
            Ok(n) => {
                views.assume(n, pod);
                placed.push(n);
            }
            Err(why) => {
                let message = if i == 0 {
                    format!(
                        "gang of {}: no replica fits: {}",
                        members.len(),
                        why.message
                    )
                } else {
                    format!(
                        "gang of {}: only {i} replica(s) fit together: {}",
                        members.len(),
                        why.message
                    )
                };
                return Err(Unschedulable { message });
            }
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::Quantity;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str, gpus: i64, labels: &[(&str, &str)]) -> NodeView {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "status": {
                "allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                "conditions": [{"type": "Ready", "status": "True"}],
                "runtimeClasses": ["process"],
            }
        }))
        .unwrap();
        n.metadata.name = name.to_string();
        NodeView::new(&n)
    }

    fn pod(cpu: &str, mem: &str, gpus: i64) -> Pod {
        let mut limits = serde_json::Map::new();
        limits.insert("cpu".into(), json!(cpu));
        limits.insert("memory".into(), json!(mem));
        if gpus > 0 {
            limits.insert("nvidia.com/gpu".into(), json!(gpus.to_string()));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": limits}}]}
        }))
        .unwrap()
    }

    fn check(pod: &Pod, nodes: &[NodeView], strategy: Strategy, expected: Result<&str, &str>) {
        let got = place(pod, nodes, strategy)
            .map(|i| nodes[i].name.as_str())
            .map_err(|u| u.message);
        assert_eq!(got, expected.map_err(str::to_string));
    }

    #[test]
    fn fits_on_resources() {
        let nodes = [
            node("a", "2", "4Gi", 0, &[]),
            node("b", "8", "16Gi", 2, &[]),
        ];
        check(&pod("1", "1Gi", 0), &nodes, Strategy::Spread, Ok("b"));
        check(&pod("1", "1Gi", 0), &nodes, Strategy::BinPack, Ok("a"));
        check(&pod("4", "1Gi", 0), &nodes, Strategy::Spread, Ok("b"));
        check(&pod("1", "1Gi", 2), &nodes, Strategy::BinPack, Ok("b"));
        check(
            &pod("16", "1Gi", 0),
            &nodes,
            Strategy::Spread,
            Err("0/2 nodes are available: 2 Insufficient cpu"),
        );
        check(
            &pod("4", "8Gi", 3),
            &nodes,
            Strategy::Spread,
            Err("0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 2 Insufficient nvidia.com/gpu"),
        );
    }

    #[test]
    fn counts_what_is_already_bound() {
        let mut a = node("a", "4", "8Gi", 4, &[]);
        a.requested = Resources {
            cpu: 3500,
            memory: 0,
            gpus: 3000,
            pods: 1000,
        };
        check(
            &pod("1", "1Gi", 0),
            &[a.clone()],
            Strategy::Spread,
            Err("0/1 nodes are available: 1 Insufficient cpu"),
        );
        check(
            &pod("500m", "1Gi", 1),
            &[a.clone()],
            Strategy::Spread,
            Ok("a"),
        );
        check(
            &pod("500m", "1Gi", 2),
            &[a],
            Strategy::Spread,
            Err("0/1 nodes are available: 1 Insufficient nvidia.com/gpu"),
        );
    }

    #[test]
    fn selector_taints_and_readiness() {
        let mut p = pod("1", "1Gi", 0);
        p.spec.node_selector.insert("pool".into(), "gpu".into());
        let mut tainted = node("t", "8", "8Gi", 0, &[("pool", "gpu")]);
        tainted.taints.push(Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: TaintEffect::NoSchedule,
        });
        let mut down = node("d", "8", "8Gi", 0, &[("pool", "gpu")]);
        down.ready = false;
        let nodes = [
            node("a", "1", "1Gi", 0, &[]),
            node("b", "8", "8Gi", 0, &[]),
            tainted.clone(),
            down,
        ];
        check(
            &p,
            &nodes,
            Strategy::Spread,
            Err("0/4 nodes are available: 2 node(s) didn't match node selector, 1 node(s) had untolerated taint {dedicated: ml}, 1 node(s) were not ready"),
        );
        p.spec.tolerations.push(Toleration {
            key: Some("dedicated".into()),
            operator: Some(TolerationOperator::Equal),
            value: Some("ml".into()),
            effect: Some(TaintEffect::NoSchedule),
        });
        check(&p, &nodes, Strategy::Spread, Ok("t"));
        p.spec.tolerations[0].operator = Some(TolerationOperator::Exists);
        p.spec.tolerations[0].value = None;
        check(&p, &nodes, Strategy::Spread, Ok("t"));
    }

    #[test]
    fn runtime_class_and_no_nodes() {
        let mut p = pod("1", "1Gi", 0);
        p.spec.runtime_class_name = Some("runsc".into());
        check(
            &p,
            &[node("a", "8", "8Gi", 0, &[])],
            Strategy::Spread,
            Err("0/1 nodes are available: 1 node(s) didn't support runtime class \"runsc\""),
        );
        check(
            &p,
            &[],
            Strategy::Spread,
            Err("0/0 nodes are available: no nodes registered"),
        );
    }

    #[test]
    fn gangs_fit_whole_or_not_at_all() {
        // Two nodes with 3 GPUs each: 2 replicas x 2 GPUs span both; 2 x 4 fits on neither.
        let nodes = [
            node("a", "8", "16Gi", 3, &[]),
            node("b", "8", "16Gi", 3, &[]),
        ];
        let two = pod("1", "1Gi", 2);
        let four = pod("1", "1Gi", 4);
        let got = place_gang(&[&two, &two], &nodes, Strategy::BinPack).unwrap();
        assert_eq!(got, vec![0, 1]);
        let err = place_gang(&[&four, &four], &nodes, Strategy::BinPack).unwrap_err();
        assert_eq!(
            err.message,
            "gang of 2: no replica fits: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu"
        );
        let err = place_gang(&[&two, &two, &two], &nodes, Strategy::BinPack).unwrap_err();
        assert_eq!(
            err.message,
            "gang of 3: only 2 replica(s) fit together: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu"
        );
        // One GPU per replica packs onto one node first.
        let one = pod("1", "1Gi", 1);
        assert_eq!(
            place_gang(&[&one, &one, &one], &nodes, Strategy::BinPack).unwrap(),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn requests_default_to_limits() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "x", "resources": {"limits": {"cpu": "500m"}}},
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(Resources::of_pod(&p).cpu, 750);
        assert_eq!(Quantity::parse("750m").unwrap().millis(), 750);
    }
}

#[cfg(test)]
#[path = "spread_tests.rs"]
mod spread_tests;
