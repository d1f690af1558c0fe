//! The pod network across nodes with real agents ([`MultiNode`]: three agents in network
//! namespaces on a test "datacenter" bridge, the control plane on the host): each node gets a
//! slice of the cluster CIDR, its agent programs VXLAN to the others, and runc pods on different
//! nodes reach each other by pod IP in both directions with no NAT between them, while a pod's
//! traffic to an address outside the cluster (the bridge's host side) is masqueraded.

use crate::harness::*;
use crate::multinode::*;
use kumo_api::{Node, Pod, PodPhase};
use std::io::{Read, Write};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);
const NS: &str = "podnet";

fn pod(name: &str, node: &str, restart: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  nodeName: {node}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: \"{BUSYBOX}\"\n    imagePullPolicy: IfNotPresent\n    command: [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\n"
    )
}

fn succeeded(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == PodPhase::Succeeded)
}

fn logs(c: &Cluster, pod: &str) -> String {
    String::from_utf8_lossy(&c.kumo(&["logs", "-n", NS, pod]).stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_three_nodes_reach_each_other_by_pod_ip_without_nat() {
    // The control plane gives the nodes their pod CIDRs (no --pod-cidr per agent).
    let mn = MultiNode::start_with(
        3,
        Options {
            pod_cidr_per_node: false,
            ..Options::default()
        },
    )
    .await;
    let c = &mn.cluster;
    let client = c.client();
    let mut slices = Vec::new();
    for node in &mn.nodes {
        let n: Node = client.get("", &node.name).await.unwrap();
        let slice = n.spec.pod_cidr.clone().expect("a pod CIDR from node IPAM");
        assert!(
            slice.starts_with("10.88.") && slice.ends_with(".0/24"),
            "{slice}"
        );
        assert!(!slices.contains(&slice), "{slice} given twice");
        slices.push(slice);
    }
    c.privileged_namespace(NS);

    // A web server on every node; its log names each client's address (busybox httpd -vvv).
    let mut ips = Vec::new();
    for (i, node) in mn.nodes.iter().enumerate() {
        let script = format!(
            "mkdir -p /www && echo srv{i} > /www/index.html && exec /bin/busybox httpd -f -vvv -p 8080 -h /www"
        );
        c.apply(
            &format!("srv{i}.yaml"),
            &pod(&format!("srv{i}"), &node.name, "Always", &script),
        );
    }
    for (i, slice) in slices.iter().enumerate() {
        let p = wait_pod(&client, NS, &format!("srv{i}"), T, pod_ready).await;
        let ip = p.status.and_then(|s| s.pod_ip).expect("pod ip");
        let prefix = slice.trim_end_matches("0/24");
        assert!(ip.starts_with(prefix), "srv{i}'s {ip} is outside {slice}");
        ips.push(ip);
    }

    // Clients on other nodes, both ways: HTTP and ping by pod IP.
    for (from, to) in [(0, 1), (1, 0), (2, 1), (0, 2)] {
        let name = format!("cli{from}to{to}");
        let script = format!(
            "/bin/busybox wget -q -O - http://{ip}:8080/index.html && /bin/busybox ping -c 1 -W 3 {ip} >/dev/null && echo pinged",
            ip = ips[to]
        );
        c.apply(
            &format!("{name}.yaml"),
            &pod(&name, &mn.nodes[from].name, "Never", &script),
        );
        let p = wait_pod(&client, NS, &name, T, succeeded).await;
        let client_ip = p.status.and_then(|s| s.pod_ip).expect("client pod ip");
        let out = logs(c, &name);
        assert!(
            out.contains(&format!("srv{to}")) && out.contains("pinged"),
            "{name}: {out}"
        );
        // No NAT between pods: the server saw the client pod's own address (httpd writes
        // `[::ffff:IP]:PORT: connected`).
        let seen = logs(c, &format!("srv{to}"));
        assert!(
            seen.contains(&format!("[::ffff:{client_ip}]:")),
            "srv{to} did not see {client_ip}: {seen}"
        );
    }

    // Leaving the cluster: a listener on the datacenter bridge's host side (no node) sees the
    // node's address, not the pod's.
    let host = format!("10.125.{}.1", mn.slot);
    let listener = std::net::TcpListener::bind(format!("{host}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!("/bin/busybox wget -q -O - http://{host}:{port}/ && echo reached");
    c.apply("out.yaml", &pod("out", &mn.nodes[0].name, "Never", &script));
    let deadline = std::time::Instant::now() + T;
    let peer = loop {
        match listener.accept() {
            Ok((mut conn, peer)) => {
                conn.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                break peer;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no connection from pod out"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert_eq!(peer.ip().to_string(), mn.nodes[0].address);
    wait_pod(&client, NS, "out", T, succeeded).await;
    assert!(logs(c, "out").contains("reached"));
}
