//! Pod-to-pod throughput and latency across two "nodes" (network namespaces on a test bridge)
//! over kumo's VXLAN (or host-gw) backend, against two pods on one node and against
//! host-to-host over the same "datacenter" link (issue #18's network benchmark).
//!
//! ```text
//! cargo run -p kumo-net --example podnet_bench -- [vxlan|host-gw] [SECONDS]
//! ```
//!
//! Runs as root; needs `ip` and `iperf3`. The data path is the kernel's, so a debug build
//! measures the same as a release one. Everything it makes (names `kpb…`, addresses
//! 172.31.209.0/24 and 10.209.0.0/16) is removed at the end, also on failure.

use kumo_net::{desired, Backend, Links, PeerNode};
use nix::sched::{setns, CloneFlags};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

fn on_thread_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

const NAMESPACES: [&str; 5] = ["kpbn1", "kpbn2", "kpbp1", "kpbp1b", "kpbp2"];

struct Topology;

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in NAMESPACES {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in ["kpbh1", "kpbh2", "kpb0"] {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// A pod namespace `pod` behind node `node`'s bridge `kbr` with address `addr`.
fn add_pod(node: &str, pod: &str, end: &str, addr: &str, gw: &str, mtu: u32) {
    ip(&["netns", "add", pod]);
    in_ns(
        node,
        &[
            "link",
            "add",
            end,
            "mtu",
            &mtu.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod,
        ],
    );
    in_ns(node, &["link", "set", end, "master", "kbr", "up"]);
    in_ns(pod, &["link", "set", "eth0", "mtu", &mtu.to_string()]);
    in_ns(pod, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    in_ns(pod, &["link", "set", "eth0", "up"]);
    in_ns(pod, &["link", "set", "lo", "up"]);
    in_ns(pod, &["route", "add", "default", "via", gw]);
}

fn build(backend: Backend) -> Topology {
    drop(Topology); // what an interrupted run left
    let t = Topology;
    ip(&["link", "add", "kpb0", "type", "bridge"]);
    ip(&["link", "set", "kpb0", "up"]);
    let pod_mtu = match backend {
        Backend::Vxlan => 1500 - kumo_net::VXLAN_OVERHEAD,
        Backend::HostGw => 1500,
    };
    for i in 1..=2u8 {
        let node = format!("kpbn{i}");
        let host_end = format!("kpbh{i}");
        ip(&["netns", "add", &node]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &node,
        ]);
        ip(&["link", "set", &host_end, "master", "kpb0", "up"]);
        in_ns(
            &node,
            &["addr", "add", &format!("172.31.209.{i}/24"), "dev", "eth0"],
        );
        in_ns(&node, &["link", "set", "eth0", "up"]);
        in_ns(&node, &["link", "set", "lo", "up"]);
        in_ns(
            &node,
            &[
                "link",
                "add",
                "kbr",
                "mtu",
                &pod_mtu.to_string(),
                "type",
                "bridge",
            ],
        );
        in_ns(
            &node,
            &["addr", "add", &format!("10.209.{i}.1/24"), "dev", "kbr"],
        );
        in_ns(&node, &["link", "set", "kbr", "up"]);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .output()
            .expect("sysctl");
        assert!(out.status.success());
    }
    add_pod(
        "kpbn1",
        "kpbp1",
        "kpbv1",
        "10.209.1.2",
        "10.209.1.1",
        pod_mtu,
    );
    add_pod(
        "kpbn1",
        "kpbp1b",
        "kpbv1b",
        "10.209.1.3",
        "10.209.1.1",
        pod_mtu,
    );
    add_pod(
        "kpbn2",
        "kpbp2",
        "kpbv2",
        "10.209.2.2",
        "10.209.2.1",
        pod_mtu,
    );
    let peer = |i: u8| PeerNode {
        name: format!("kpbn{i}"),
        address: format!("172.31.209.{i}").parse().unwrap(),
        pod_cidr: format!("10.209.{i}.0/24"),
    };
    for i in 1..=2u8 {
        let (local, peers) = (peer(i), vec![peer(1), peer(2)]);
        on_thread_in(&format!("kpbn{i}"), move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let links = Links::connect().unwrap();
                    let vxlan = match backend {
                        Backend::Vxlan => Some(links.ensure_vxlan(&local, 1500).await.unwrap()),
                        Backend::HostGw => None,
                    };
                    links
                        .apply(backend, vxlan, &desired(backend, &local, &peers))
                        .await
                        .unwrap();
                })
        });
    }
    t
}

/// iperf3 from namespace `client` to `server_ip` (served in `server`): bits per second.
fn iperf(server: &str, server_ip: &str, client: &str, seconds: u32) -> f64 {
    let mut s: Child = Command::new("ip")
        .args([
            "netns", "exec", server, "iperf3", "-s", "-1", "-B", server_ip,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let t = seconds.to_string();
    // The server needs a moment to listen (iperf3 -J reports a refused connection in its
    // JSON): retried within a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let bps = loop {
        let o = Command::new("ip")
            .args([
                "netns", "exec", client, "iperf3", "-J", "-c", server_ip, "-t", &t,
            ])
            .output()
            .expect("iperf3 client");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            break bps;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 {client} -> {server_ip}: {}",
            v["error"]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = s.kill();
    let _ = s.wait();
    bps
}

/// UDP round trips from namespace `client` to an echo in `server` at `addr`: p50, p99 in µs.
fn rtt(server: &str, addr: &str, client: &str, n: usize) -> (f64, f64) {
    let target: std::net::SocketAddr = format!("{addr}:7099").parse().unwrap();
    let echo = on_thread_in(server, move || UdpSocket::bind(target).unwrap());
    echo.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let Ok((len, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..len], from);
        }
    });
    let mut times: Vec<f64> = on_thread_in(client, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        (0..n)
            .map(|_| {
                let start = Instant::now();
                s.send_to(b"ping", target).unwrap();
                s.recv_from(&mut buf).expect("echo reply");
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    });
    echoer.join().unwrap();
    times.sort_by(|a, b| a.total_cmp(b));
    (times[n / 2], times[n * 99 / 100])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend: Backend = args
        .get(1)
        .map_or(Ok(Backend::Vxlan), |s| s.parse())
        .unwrap_or_else(|e| panic!("{e}"));
    let seconds: u32 = args.get(2).map_or(5, |s| s.parse().expect("SECONDS"));
    let _t = build(backend);
    let cases = [
        (
            "host-to-host (datacenter link)",
            "kpbn2",
            "172.31.209.2",
            "kpbn1",
        ),
        (
            match backend {
                Backend::Vxlan => "pod-to-pod across nodes (vxlan)",
                Backend::HostGw => "pod-to-pod across nodes (host-gw)",
            },
            "kpbp2",
            "10.209.2.2",
            "kpbp1",
        ),
        ("pod-to-pod on one node", "kpbp1b", "10.209.1.3", "kpbp1"),
    ];
    let mut base = None;
    println!("| path | throughput (Gbit/s) | vs host-to-host | UDP RTT p50 (µs) | p99 (µs) |");
    println!("|---|---|---|---|---|");
    for (name, server, addr, client) in cases {
        let bps = iperf(server, addr, client, seconds);
        let (p50, p99) = rtt(server, addr, client, 2000);
        let base = *base.get_or_insert(bps);
        println!(
            "| {name} | {:.2} | {:.0}% | {p50:.0} | {p99:.0} |",
            bps / 1e9,
            100.0 * bps / base
        );
    }
}
