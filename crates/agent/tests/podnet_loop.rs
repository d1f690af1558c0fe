//! The agent's pod network loop against a real API server (in-memory store) and a real kernel
//! (a network namespace of the test's own, run as root as CI does): the routes, FDB and
//! neighbour entries follow the Node objects as nodes join, change address and leave, and a
//! node at this node's own address gets no route but an Event.

use kumo_agent::podnet::{run, REASON_POD_NETWORK_CONFLICT};
use kumo_api::node::{NodeAddress, NodeStatus};
use kumo_api::{Event, Node, ObjectMeta};
use kumo_apiserver::{serve, Config};
use kumo_client::{Client, ClientConfig, ListParams};
use kumo_net::{format_mac, vtep_mac, Backend, Links, PeerNode};
use kumo_store::MemStore;
use nix::sched::{setns, CloneFlags};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "kplloop1";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the node's kernel holds of kumo's: routes, FDB entries, neighbours, one string.
fn kernel() -> String {
    let routes = ip(&["netns", "exec", NS, "ip", "route", "show", "proto", "77"]);
    let fdb = Command::new("ip")
        .args([
            "netns",
            "exec",
            NS,
            "bridge",
            "fdb",
            "show",
            "dev",
            "kumo.vxlan",
        ])
        .output()
        .unwrap();
    let neigh = ip(&[
        "netns",
        "exec",
        NS,
        "ip",
        "neigh",
        "show",
        "dev",
        "kumo.vxlan",
        "nud",
        "permanent",
    ]);
    format!("{routes}{}{neigh}", String::from_utf8_lossy(&fdb.stdout))
}

/// Waits (at most 20 s) until the kernel state satisfies `done`.
async fn eventually(what: &str, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let k = kernel();
        if done(&k) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {k}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_node(client: &Client, name: &str, address: &str, cidr: &str) {
    let mut node = Node {
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    kumo_api::Resource::set_type_meta(&mut node);
    node.spec.pod_cidr = Some(cidr.into());
    let mut node = match client.get_opt::<Node>("", name).await.unwrap() {
        Some(n) => n,
        None => client.create(&node).await.unwrap(),
    };
    node.status = Some(NodeStatus {
        addresses: vec![NodeAddress {
            type_: "InternalIP".into(),
            address: address.into(),
        }],
        ..Default::default()
    });
    client.update_status(&node).await.unwrap();
}

struct Namespace;

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_follow_nodes_as_they_join_move_and_leave() {
    let _ = Command::new("ip").args(["netns", "del", NS]).output();
    ip(&["netns", "add", NS]);
    let _ns = Namespace;
    let n = |args: &[&str]| {
        let mut all = vec!["netns", "exec", NS, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    };
    // The node's link (a veth pair inside the namespace: the kernel here has no dummy links).
    n(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    n(&["addr", "add", "172.31.219.1/24", "dev", "eth0"]);
    n(&["link", "set", "eth0p", "up"]);
    n(&["link", "set", "eth0", "up"]);

    let store = Arc::new(MemStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        Config::new(store, vec!["t0ken".into()]),
        std::future::pending(),
    ));
    let client = Client::new(&ClientConfig {
        server,
        token: "t0ken".into(),
        ..Default::default()
    })
    .unwrap();

    // The netlink socket is made in the namespace; its connection runs on this runtime, and
    // the API client stays in the host's namespace.
    let handle = tokio::runtime::Handle::current();
    let links = std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/run/netns/{NS}")).unwrap();
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        let _rt = handle.enter();
        Links::connect().unwrap()
    })
    .join()
    .unwrap();

    put_node(&client, "me", "172.31.219.1", "10.219.1.0/24").await;
    put_node(&client, "b", "172.31.219.2", "10.219.2.0/24").await;
    let local = PeerNode {
        name: "me".into(),
        address: "172.31.219.1".parse().unwrap(),
        pod_cidr: "10.219.1.0/24".into(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let looped = tokio::spawn(run(client.clone(), Backend::Vxlan, local, links, async {
        let _ = stopped.await;
    }));

    let mac_b = format_mac(&vtep_mac("b"));
    eventually("node b's entries", |k| {
        k.contains("10.219.2.0/24 via 10.219.2.0 dev kumo.vxlan")
            && k.contains(&format!("{mac_b} dst 172.31.219.2"))
            && k.contains(&format!("10.219.2.0 lladdr {mac_b}"))
    })
    .await;

    // b moves to another address: its FDB entry follows.
    put_node(&client, "b", "172.31.219.3", "10.219.2.0/24").await;
    eventually("node b's new address", |k| {
        k.contains(&format!("{mac_b} dst 172.31.219.3")) && !k.contains("dst 172.31.219.2")
    })
    .await;

    // c joins at this node's own address: no route, and an Event on this node says why.
    put_node(&client, "c", "172.31.219.1", "10.219.3.0/24").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = client
            .list::<Event>(Some("default"), &ListParams::default())
            .await
            .unwrap()
            .items;
        if let Some(e) = events
            .iter()
            .find(|e| e.reason == REASON_POD_NETWORK_CONFLICT)
        {
            assert_eq!(e.involved_object.name, "me");
            assert_eq!(
                e.message,
                "node c has this node's address 172.31.219.1: no route to its pods"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {REASON_POD_NETWORK_CONFLICT} event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!kernel().contains("10.219.3.0"), "{}", kernel());

    // b leaves: everything of it goes.
    client.delete::<Node>("", "b", None).await.unwrap();
    eventually("node b gone", |k| {
        !k.contains("10.219.2.0") && !k.contains(&mac_b)
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), looped)
        .await
        .expect("the loop stops")
        .unwrap();
}
