//! Replicas of one app process spread over zones, then nodes, before resources decide.

use super::*;
use kumo_api::keys::LABEL_ZONE;
use serde_json::json;

fn node(name: &str, zone: Option<&str>, replicas: u32) -> NodeView {
    let labels: BTreeMap<String, String> = zone
        .map(|z| (LABEL_ZONE.to_string(), z.to_string()))
        .into_iter()
        .collect();
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "runtimeClasses": ["process"]}
    }))
    .unwrap();
    let mut v = NodeView::new(&n);
    if replicas > 0 {
        v.spread.insert("default/web/web".into(), replicas);
    }
    v
}

fn replica(labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "labels": labels},
        "spec": {"runtimeClassName": "process", "containers": [{"name": "c", "command": ["x"]}]}
    }))
    .unwrap()
}

fn pick(pod: &Pod, nodes: &[NodeView]) -> String {
    nodes[place(pod, nodes, Strategy::Spread).unwrap()]
        .name
        .clone()
}

#[test]
fn replicas_go_to_the_emptiest_zone_then_node() {
    let web = replica(json!({"kumo.dev/app": "web", "kumo.dev/process": "web"}));
    // Zone a holds two replicas (on a1), zone b one: b, and within b the node without one.
    let nodes = [
        node("a1", Some("a"), 2),
        node("a2", Some("a"), 0),
        node("b1", Some("b"), 1),
        node("b2", Some("b"), 0),
    ];
    assert_eq!(pick(&web, &nodes), "b2");
    // Without zones, the node with the fewest.
    let nodes = [
        node("n1", None, 1),
        node("n2", None, 0),
        node("n3", None, 1),
    ];
    assert_eq!(pick(&web, &nodes), "n2");
    // Another process of the app is its own group; other pods ignore groups (first by name).
    let worker = replica(json!({"kumo.dev/app": "web", "kumo.dev/process": "worker"}));
    assert_eq!(pick(&worker, &nodes), "n1");
    assert_eq!(pick(&replica(json!({})), &nodes), "n1");
}
