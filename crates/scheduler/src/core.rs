//! The pure placement core: filter nodes that fit a pod, score them, pick one, or explain why none.

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

/// The reasons `node` cannot take `pod`; empty when it fits.
pub fn misfits(pod: &Pod, want: &Resources, node: &NodeView) -> Vec<String> {
    if !node.ready {
        return vec!["node(s) were not ready".into()];
    }
    if node.unschedulable {
        return vec!["node(s) were unschedulable".into()];
    }
    if pod
        .spec
        .node_selector
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
    {
        return vec!["node(s) didn't match node selector".into()];
    }
    if let Some(t) = node
        .taints
        .iter()
        .find(|t| t.effect == TaintEffect::NoSchedule && !tolerates(&pod.spec.tolerations, t))
    {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )];
    }
    if let Some(rc) = &pod.spec.runtime_class_name {
        if !node.runtime_classes.contains(rc) {
            return vec![format!("node(s) didn't support runtime class {rc:?}")];
        }
    }
    let mut reasons = Vec::new();
    let free = |alloc: i128, used: i128| alloc - used;
    if want.pods > free(node.allocatable.pods, node.requested.pods) {
        reasons.push("Too many pods".to_string());
    }
    if want.cpu > 0 && want.cpu > free(node.allocatable.cpu, node.requested.cpu) {
        reasons.push("Insufficient cpu".to_string());
    }
    if want.memory > 0 && want.memory > free(node.allocatable.memory, node.requested.memory) {
        reasons.push("Insufficient memory".to_string());
    }
    if want.gpus > 0 && want.gpus > free(node.allocatable.gpus, node.requested.gpus) {
        reasons.push(format!("Insufficient {GPU_RESOURCE}"));
    }
    reasons
}

/// Scores a fitting node from 0 to 100: higher is better under `strategy`.
pub fn score(want: &Resources, node: &NodeView, strategy: Strategy) -> i128 {
    let fraction_used = |alloc: i128, used: i128, add: i128| -> Option<i128> {
        (alloc > 0).then(|| ((used + add) * 100 / alloc).clamp(0, 100))
    };
    let mut parts = vec![
        fraction_used(node.allocatable.cpu, node.requested.cpu, want.cpu),
        fraction_used(node.allocatable.memory, node.requested.memory, want.memory),
    ];
    if want.gpus > 0 {
        parts.push(fraction_used(
            node.allocatable.gpus,
            node.requested.gpus,
            want.gpus,
        ));
    }
    let used: Vec<i128> = parts.into_iter().flatten().collect();
    let avg_used = if used.is_empty() {
        0
    } else {
        used.iter().sum::<i128>() / used.len() as i128
    };
    match strategy {
        Strategy::Spread => 100 - avg_used,
        Strategy::BinPack => avg_used,
    }
}

/// Node label naming a node's zone; replicas of one app process spread across zones first.
pub const LABEL_ZONE: &str = "kumo.dev/zone";

/// The spread group of a pod: replicas of one app process (`ns/app/process`), which the
/// scheduler places on the zones, then the nodes, holding the fewest of them.
pub fn spread_key(pod: &Pod) -> Option<String> {
    let labels = &pod.metadata.labels;
    let app = labels.get(kumo_api::app::LABEL_APP)?;
    let process = labels.get(kumo_api::app::LABEL_PROCESS)?;
    Some(format!("{}/{app}/{process}", pod.metadata.ns()))
}

/// (replicas of the group in the node's zone, on the node): fewer is better.
fn spread_counts(key: Option<&str>, nodes: &[NodeView], node: &NodeView) -> (u32, u32) {
    let Some(key) = key else {
        return (0, 0);
    };
    let on = |n: &NodeView| n.spread.get(key).copied().unwrap_or(0);
    let zone = match node.labels.get(LABEL_ZONE) {
        Some(z) => nodes
            .iter()
            .filter(|n| n.labels.get(LABEL_ZONE) == Some(z))
            .map(on)
            .sum(),
        None => on(node),
    };
    (zone, on(node))
}

/// Chooses a node for `pod`; ties go to the first node by name, so placement is deterministic.
/// Replicas of one app process go first to the zone, then the node, with the fewest of them.
pub fn place(pod: &Pod, nodes: &[NodeView], strategy: Strategy) -> Result<usize, Unschedulable> {
    if nodes.is_empty() {
        return Err(Unschedulable {
            message: "0/0 nodes are available: no nodes registered".into(),
        });
    }
    let want = Resources::of_pod(pod);
    let key = spread_key(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<((i64, i64, i128), &str, usize)> = None;
    for (i, node) in nodes.iter().enumerate() {
        let why = misfits(pod, &want, node);
        if why.is_empty() {
            let (zone, here) = spread_counts(key.as_deref(), nodes, node);
            let s = (
                -i64::from(zone),
                -i64::from(here),
                score(&want, node, strategy),
            );
            let better = match best {
                None => true,
                Some((bs, bname, _)) => s > bs || (s == bs && node.name.as_str() < bname),
            };
            if better {
                best = Some((s, node.name.as_str(), i));
            }
        } else {
            for r in why {
                *reasons.entry(r).or_default() += 1;
            }
        }
    }
    if let Some((_, _, i)) = best {
        return Ok(i);
    }
    let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Err(Unschedulable {
        message: format!(
            "0/{} nodes are available: {}",
            nodes.len(),
            detail.join(", ")
        ),
    })
}

/// Label naming the gang (scheduling group) a pod belongs to; its value is unique per namespace.
pub const LABEL_GANG: &str = "kumo.dev/gang";
/// Annotation giving the number of pods in the pod's gang.
pub const ANNOTATION_GANG_SIZE: &str = "kumo.dev/gang-size";

/// Places every member of a gang at once, or none of them: one node index per member, in order.
/// Members are placed one after another on views that count the members placed before them.
pub fn place_gang(
    members: &[&Pod],
    nodes: &[NodeView],
    strategy: Strategy,
) -> Result<Vec<usize>, Unschedulable> {
    let mut views = nodes.to_vec();
    let mut placed = Vec::with_capacity(members.len());
    for (i, pod) in members.iter().enumerate() {
        match place(pod, &views, strategy) {
            Ok(n) => {
                views[n].requested.add(&Resources::of_pod(pod));
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
