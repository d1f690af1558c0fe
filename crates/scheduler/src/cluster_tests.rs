//! Sampled searches: how many nodes they look for, where they start, and what they explain.

use super::*;
use crate::core::misfits;
use kumo_api::Node;
use serde_json::json;
use std::collections::BTreeMap;

fn node(i: usize, zone: &str) -> NodeView {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": format!("n{i:04}"), "labels": {LABEL_ZONE: zone}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    NodeView::new(&n)
}

fn pod(cpu: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}
    }))
    .unwrap()
}

fn cluster(n: usize) -> Cluster {
    let zones = ["a", "b", "c"];
    Cluster::new((0..n).map(|i| node(i, zones[i % 3])).collect()).sampled()
}

#[test]
fn feasible_nodes_follow_kube_scheduler() {
    for (nodes, expected) in [
        (0, 0),
        (3, 3),
        (99, 99),
        (100, 100),
        (200, 100),
        (1000, 420),
        (5000, 500),
        (10000, 500),
        (100_000, 5000),
    ] {
        assert_eq!(feasible_nodes_to_find(nodes), expected, "{nodes} nodes");
    }
}

#[test]
fn each_search_starts_where_the_last_one_stopped() {
    // 200 equal nodes: a search stops after 100 feasible ones and the next starts after them.
    let mut c = cluster(200);
    let p = pod("1", json!({}));
    let mut picked = Vec::new();
    for _ in 0..3 {
        let i = c.place(&p, Strategy::Spread).unwrap();
        c.assume(i, &p);
        picked.push(c.nodes()[i].name.clone());
    }
    assert_eq!(picked, ["n0000", "n0100", "n0001"]);
    // Unsampled, the whole cluster is searched: the least allocated, first by name.
    let mut whole = Cluster::new(c.nodes().to_vec());
    assert_eq!(whole.place(&p, Strategy::Spread), Ok(2));
}

#[test]
fn unschedulable_reasons_count_every_node() {
    let mut c = cluster(300);
    assert_eq!(
        c.place(&pod("8", json!({})), Strategy::Spread)
            .unwrap_err()
            .message,
        "0/300 nodes are available: 300 Insufficient cpu"
    );
}

#[test]
fn replicas_spread_evenly_over_zones_with_sampling() {
    let mut c = cluster(300);
    let web = pod(
        "100m",
        json!({"kumo.dev/app": "web", "kumo.dev/process": "web"}),
    );
    let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..30 {
        let i = c.place(&web, Strategy::Spread).unwrap();
        c.assume(i, &web);
        *per_zone
            .entry(c.nodes()[i].labels[LABEL_ZONE].clone())
            .or_default() += 1;
    }
    assert_eq!(per_zone.into_values().collect::<Vec<_>>(), [10, 10, 10]);
    // The zone counts kept by `assume` are those a fresh cluster computes from the nodes.
    assert_eq!(Cluster::new(c.nodes().to_vec()).zone_counts, c.zone_counts);
}

#[test]
fn fits_agrees_with_misfits() {
    let mut full = node(0, "a");
    full.requested.cpu = 3500;
    let mut down = node(1, "a");
    down.ready = false;
    let mut picky = pod("1", json!({}));
    picky.spec.node_selector.insert("pool".into(), "gpu".into());
    for n in [node(2, "a"), full, down] {
        for p in [pod("1", json!({})), pod("16", json!({})), picky.clone()] {
            let want = Resources::of_pod(&p);
            assert_eq!(fits(&p, &want, &n), misfits(&p, &want, &n).is_empty());
        }
    }
}
