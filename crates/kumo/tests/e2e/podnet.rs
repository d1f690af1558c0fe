//! The pod network across nodes, through the real server: node IPAM gives Nodes slices of
//! `--cluster-cidr`, frees a deleted Node's, says when none is left, and bad flags stop the
//! server naming them. (The kernel side, VXLAN and host-gw across namespaces, is tested in
//! crates/net/tests/podnet.rs.)

use crate::harness::*;
use kumo_api::{Event, Node, ObjectMeta};
use kumo_client::{Client, ListParams};
use std::time::{Duration, Instant};

#[test]
fn bad_cluster_network_flags_stop_the_server_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (
            &["server", "--node-cidr-mask-size", "8"][..],
            "--node-cidr-mask-size: /8 is larger than the cluster CIDR 10.88.0.0/16 (want /16 or longer)",
        ),
        (
            &["server", "--cluster-cidr", "10.88.0.1/16"][..],
            "--cluster-cidr: 10.88.0.1/16 has host bits set",
        ),
        (
            &["server", "--cluster-cidr", "127.0.0.0/16"][..],
            "--cluster-cidr: 127.0.0.0/16 overlaps this host's network 127.0.0.0/8 on lo",
        ),
        (
            &["up", "--cluster-cidr", "10.128.0.0/24", "--node-cidr-mask-size", "31"][..],
            "--node-cidr-mask-size: /31 leaves no room for pods (at most /30)",
        ),
    ] {
        let err = refused_start(dir.path(), args);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

async fn pod_cidr(client: &Client, name: &str) -> Option<String> {
    let node: Node = client.get("", name).await.expect("get node");
    node.spec.pod_cidr
}

/// Waits until node `name`'s pod CIDR is `want`.
async fn wait_pod_cidr(client: &Client, name: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = pod_cidr(client, name).await;
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {name}: pod CIDR {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn add_node(client: &Client, name: &str) {
    let mut node = Node {
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    kumo_api::Resource::set_type_meta(&mut node);
    client.create(&node).await.expect("create node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_gives_each_node_a_slice_frees_it_and_says_when_none_is_left() {
    // Four /24 slices; the agent of node-1 keeps its own --pod-cidr (outside the range).
    let c = Cluster::up(&["--cluster-cidr", "10.128.0.0/22"]);
    let client = c.client();
    let own = pod_cidr(&client, "node-1").await;
    assert!(
        own.as_deref().is_some_and(|c| c.starts_with("10.124.")),
        "node-1 publishes its --pod-cidr: {own:?}"
    );
    for (name, want) in [
        ("n-a", "10.128.0.0/24"),
        ("n-b", "10.128.1.0/24"),
        ("n-c", "10.128.2.0/24"),
        ("n-d", "10.128.3.0/24"),
    ] {
        add_node(&client, name).await;
        wait_pod_cidr(&client, name, Some(want)).await;
        let node: Node = client.get("", name).await.unwrap();
        assert_eq!(node.spec.pod_cidrs, vec![want.to_string()]);
    }

    // None left: n-e waits, with a Warning naming the cluster CIDR.
    add_node(&client, "n-e").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let events = client
            .list::<Event>(Some("default"), &ListParams::default())
            .await
            .expect("list events")
            .items;
        let found = events
            .into_iter()
            .find(|e| e.reason == "CIDRNotAvailable" && e.involved_object.name == "n-e");
        if let Some(e) = found {
            break e.message;
        }
        assert!(
            Instant::now() < deadline,
            "no CIDRNotAvailable event for n-e"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        message,
        "node n-e has no pod CIDR: all 4 /24 slices of the cluster CIDR 10.128.0.0/22 are in use"
    );
    assert_eq!(pod_cidr(&client, "n-e").await, None);

    // n-b goes: its slice is n-e's.
    client
        .delete::<Node>("", "n-b", None)
        .await
        .expect("delete n-b");
    wait_pod_cidr(&client, "n-e", Some("10.128.1.0/24")).await;

    // A Node's pod CIDR is checked like any field.
    let mut bad: Node = client.get("", "n-a").await.unwrap();
    bad.spec.pod_cidr = Some("10.128.0.1/24".into());
    let err = client.update(&bad).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "spec.podCIDR: Invalid value: \"10.128.0.1/24\": 10.128.0.1/24 has host bits set"
        ),
        "{err}"
    );
}
