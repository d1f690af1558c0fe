//! Work across the nodes of one cluster ([`MultiNode`]: agents in network namespaces, the pod
//! network between them): a two-replica container MLTask whose replicas land on two nodes and
//! rendezvous over TCP from the injected environment alone, and an App with a replica on every
//! node answering through a `kumo router` run on one of them, which reaches the others' replicas
//! by pod IP over the pod network.

use crate::apps::{reaches_all, serving, wait_app, web_pods};
use crate::multinode::*;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::Pod;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mltask_and_an_app_each_span_several_nodes() {
    // One fake GPU per node: a replica asking for one GPU fits once per node, as on machines
    // with one accelerator each. The control plane gives the nodes their pod CIDRs.
    let mn = MultiNode::start_with(
        3,
        Options {
            agent_args: vec!["--fake-gpus".into(), "1".into()],
            pod_cidr_per_node: false,
            ..Options::default()
        },
    )
    .await;
    // Independent of each other: run at once to keep the test short.
    tokio::join!(
        mltask_replicas_on_two_nodes_rendezvous_over_tcp(&mn),
        app_replicas_on_every_node_answer_through_a_router_on_one(&mn),
    );
}

/// Rank 0 listens on `MASTER_PORT`; rank 1 connects to `MASTER_ADDR:MASTER_PORT` (replica 0's
/// pod IP, on another node), sends a line and reads rank 0's answer, which quotes it.
async fn mltask_replicas_on_two_nodes_rendezvous_over_tcp(mn: &MultiNode) {
    let c = &mn.cluster;
    let client = c.client();
    // Replica 0 answers one connection with a handler that logs the line it reads (stderr: its
    // stdout is the socket) and answers with it (a handler keeps nc from closing its side
    // before the client has sent anything).
    let script = "echo RANK=$RANK WORLD=$WORLD_SIZE MASTER=$MASTER_ADDR:$MASTER_PORT; \
        if [ $RANK = 0 ]; then mkdir -p /tmp; \
          printf '#!/bin/busybox sh\\nread l\\necho \"got $l\" >&2\\necho \"ack-from-0 for $l\"\\n' > /tmp/rd; \
          chmod +x /tmp/rd; nc -l -p $MASTER_PORT -e /tmp/rd; \
        else until echo hello-from-$RANK-$HOSTNAME | nc $MASTER_ADDR $MASTER_PORT 2>/dev/null; do sleep 0.2; done; fi";
    let out = c.kumo(&[
        "submit",
        "ddp",
        "--image",
        BUSYBOX,
        "--gpus",
        "1",
        "--parallelism",
        "2",
        "-d",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "submit: {}", text(&out));
    let deadline = tokio::time::Instant::now() + T;
    let task = loop {
        let t: MLTask = client.get("default", "ddp").await.expect("get mltask");
        let phase = t.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if phase == TaskPhase::Succeeded {
            break t;
        }
        assert!(
            phase != TaskPhase::Failed && tokio::time::Instant::now() < deadline,
            "mltask ddp not Succeeded within {T:?}: {:#?}\nlogs: {}",
            t.status,
            text(&c.kumo(&["logs", "mltask/ddp"]))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rank0: Pod = client.get("default", "ddp-0").await.unwrap();
    let rank1: Pod = client.get("default", "ddp-1").await.unwrap();
    let node0 = rank0.spec.node_name.clone().expect("ddp-0 bound");
    let node1 = rank1.spec.node_name.clone().expect("ddp-1 bound");
    assert_ne!(node0, node1, "the two replicas ran on one node");
    let ip = rank0.status.and_then(|s| s.pod_ip).expect("ddp-0's pod IP");
    assert_eq!(
        task.status.unwrap().master_addr.as_deref(),
        Some(ip.as_str())
    );
    let logs = text(&c.kumo(&["logs", "mltask/ddp"]));
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    // Rank 0 rendezvous on loopback in its own network namespace; rank 1 at rank 0's pod IP.
    assert_eq!(
        lines,
        [
            "[rank 0] RANK=0 WORLD=2 MASTER=127.0.0.1:29500".to_string(),
            "[rank 0] got hello-from-1-ddp-1".to_string(),
            format!("[rank 1] RANK=1 WORLD=2 MASTER={ip}:29500"),
            "[rank 1] ack-from-0 for hello-from-1-ddp-1".to_string(),
        ],
        "ranks on {node0} and {node1}"
    );
}

/// A container App with one replica per node (the scheduler spreads an app's replicas), and
/// `kumo router` in node 0's namespace: requests through it reach every replica, those on
/// nodes 1 and 2 over the pod network.
async fn app_replicas_on_every_node_answer_through_a_router_on_one(mn: &MultiNode) {
    let c = &mn.cluster;
    let client = c.client();
    let router = mn.start_node_router(0);
    let script = "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec /bin/busybox httpd -f -p $PORT -h /www";
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "spread"},
        "spec": {
            "image": BUSYBOX,
            "processes": {"web": {"command": ["/bin/busybox", "sh", "-c", script], "replicas": 3, "port": 8080}},
            "healthcheck": {"path": "/"},
            "domains": ["spread.test"],
        }
    });
    c.apply("spread.json", &app.to_string());
    wait_app(&client, "spread", "3 ready replicas", serving(1, 3)).await;
    let pods = web_pods(&client, "spread").await;
    let nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.node_name.clone())
        .collect();
    let every: BTreeSet<String> = mn.nodes.iter().map(|n| n.name.clone()).collect();
    let placed: Vec<(&str, Option<&str>)> = pods
        .iter()
        .map(|p| (p.metadata.name.as_str(), p.spec.node_name.as_deref()))
        .collect();
    assert_eq!(nodes, every, "one replica per node: {placed:?}");
    // The router's endpoints are the pods' own addresses: a pod IP is reachable from node 0
    // only over the pod network for the replicas elsewhere.
    for p in &pods {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        assert!(
            ip.as_deref().is_some_and(|ip| ip.starts_with("10.88.")),
            "{}: {ip:?}",
            p.metadata.name
        );
    }
    let names: BTreeSet<String> = pods.iter().map(|p| p.metadata.name.clone()).collect();
    reaches_all(router.addr, "spread.test", &names).await;
}
