//! The pod network across nodes on the real kernel (run as root, as CI does), without an agent:
//! three network namespaces are "nodes" on a test "datacenter" bridge, each with a pod
//! namespace behind its own pod bridge; kumo-net's [`Links`] programs each node from the list
//! of nodes, as an agent does from its Node objects. Pods then reach each other by pod IP in
//! both directions (ICMP, TCP, UDP), the receiver sees the sending pod's own address, and a
//! pod's traffic to an address outside the cluster (the bridge's host side) is masqueraded.
//!
//! Each test owns the names `kpn<N>…` and the ranges `172.31.21<N>.0/24` (nodes) and
//! `10.21<N>.0.0/16` (pods), and removes every namespace and link it made, checked at the end.

use kumo_net::{desired, Backend, Links, PeerNode};
use nix::sched::{setns, CloneFlags};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

const NODES: u8 = 3;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// Runs `f` in a thread inside the named network namespace (`/run/netns/NAME`).
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Runs the future `f` on a fresh runtime in a thread inside namespace `name`.
fn block_in_netns<T: Send + 'static, F>(name: &str, f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
{
    in_netns(name, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// A small cluster of namespaces; dropping it removes them all.
struct Cluster {
    n: u8,
    backend: Backend,
}

impl Cluster {
    fn prefix(&self) -> String {
        format!("kpn{}", self.n)
    }
    fn bridge(&self) -> String {
        format!("{}dc", self.prefix())
    }
    fn node_ns(&self, i: u8) -> String {
        format!("{}n{i}", self.prefix())
    }
    fn pod_ns(&self, i: u8) -> String {
        format!("{}p{i}", self.prefix())
    }
    fn node_addr(&self, i: u8) -> String {
        format!("172.31.21{}.{i}", self.n)
    }
    fn outside_addr(&self) -> String {
        format!("172.31.21{}.254", self.n)
    }
    fn pod_cidr(&self, i: u8) -> String {
        format!("10.21{}.{i}.0/24", self.n)
    }
    fn cluster_cidr(&self) -> String {
        format!("10.21{}.0.0/16", self.n)
    }
    fn pod_ip(&self, i: u8) -> String {
        format!("10.21{}.{i}.2", self.n)
    }
    fn peer(&self, i: u8) -> PeerNode {
        PeerNode {
            name: self.node_ns(i),
            address: self.node_addr(i).parse().unwrap(),
            pod_cidr: self.pod_cidr(i),
        }
    }

    fn new(n: u8, backend: Backend) -> Cluster {
        let c = Cluster { n, backend };
        c.remove(); // what an interrupted run left
        let dc = c.bridge();
        // A MAC of its own: an unset bridge MAC follows the lowest port's and changes as
        // nodes are plugged in, leaving a node's cached gateway MAC dropped by the host.
        let mac = format!("02:6b:63:00:00:{:02x}", c.n);
        ip(&["link", "add", &dc, "address", &mac, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", c.outside_addr()),
            "dev",
            &dc,
        ]);
        ip(&["link", "set", &dc, "up"]);
        for i in 1..=NODES {
            c.add_node(i);
        }
        c
    }

    /// A node namespace on the datacenter bridge, with a pod behind its own pod bridge.
    fn add_node(&self, i: u8) {
        let (node, pod) = (self.node_ns(i), self.pod_ns(i));
        let host_end = format!("{}h{i}", self.prefix());
        let pod_end = format!("{}v{i}", self.prefix());
        ip(&["netns", "add", &node]);
        ip(&["netns", "add", &pod]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &node,
        ]);
        ip(&["link", "set", &host_end, "master", &self.bridge(), "up"]);
        let n = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &node, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        n(&[
            "addr",
            "add",
            &format!("{}/24", self.node_addr(i)),
            "dev",
            "eth0",
        ]);
        n(&["link", "set", "eth0", "up"]);
        n(&["link", "set", "lo", "up"]);
        let gw = format!("10.21{}.{i}.1/24", self.n);
        // The pods' gateway: a MAC of its own, which does not change as pods are plugged in.
        let mac = format!("02:6b:62:00:{:02x}:{:02x}", self.n, i);
        n(&["link", "add", "kbr", "address", &mac, "type", "bridge"]);
        n(&["addr", "add", &gw, "dev", "kbr"]);
        n(&["link", "set", "kbr", "up"]);
        n(&[
            "link", "add", &pod_end, "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ]);
        n(&["link", "set", &pod_end, "master", "kbr", "up"]);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        let p = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &pod, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        p(&[
            "addr",
            "add",
            &format!("{}/24", self.pod_ip(i)),
            "dev",
            "eth0",
        ]);
        p(&["link", "set", "eth0", "up"]);
        p(&["link", "set", "lo", "up"]);
        p(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.21{}.{i}.1", self.n),
        ]);
    }

    /// Programs node `i` to reach the pods of `peers` (the agent's reconcile); on vxlan the
    /// pod MTU is that of the node's link less the encapsulation.
    fn program(&self, i: u8, peers: &[u8]) -> kumo_net::Applied {
        let local = self.peer(i);
        let peers: Vec<PeerNode> = peers.iter().map(|p| self.peer(*p)).collect();
        let backend = self.backend;
        let (bridge, pod_cidr, cluster) = ("kbr", self.pod_cidr(i), self.cluster_cidr());
        block_in_netns(&self.node_ns(i), move || async move {
            let links = Links::connect().unwrap();
            let want = desired(backend, &local, &peers);
            assert_eq!(want.problems, Vec::<String>::new());
            let vxlan = match backend {
                Backend::Vxlan => {
                    let mtu = links.mtu_of_address(local.address).await.unwrap().unwrap();
                    Some(links.ensure_vxlan(&local, mtu).await.unwrap())
                }
                Backend::HostGw => None,
            };
            kumo_net::masquerade(bridge, &pod_cidr, Some(&cluster))
                .await
                .unwrap();
            links.apply(backend, vxlan, &want).await.unwrap()
        })
    }

    fn ping(&self, from: u8, to: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pod_ns(from),
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                to,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// A TCP connection from pod `from` to pod `to`: the source address the server saw.
    fn tcp(&self, from: u8, to: u8) -> IpAddr {
        let target: SocketAddr = format!("{}:7077", self.pod_ip(to)).parse().unwrap();
        let listener = in_netns(&self.pod_ns(to), move || TcpListener::bind(target).unwrap());
        let client = std::thread::spawn({
            let ns = self.pod_ns(from);
            move || {
                in_netns(&ns, move || {
                    let mut s =
                        TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
                    s.write_all(b"hello").unwrap();
                    let mut back = String::new();
                    s.read_to_string(&mut back).unwrap();
                    back
                })
            }
        });
        // Accepted within a deadline: a broken network fails the test instead of hanging it.
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (mut conn, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no connection from pod {from}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"world").unwrap();
        drop(conn);
        assert_eq!(&buf, b"hello");
        assert_eq!(client.join().unwrap(), "world");
        peer.ip()
    }

    /// A UDP datagram from pod `from` to `to` (an address in namespace `to_ns`): the source the
    /// receiver saw.
    fn udp(&self, from: u8, to_ns: Option<String>, to: &str) -> IpAddr {
        let target: SocketAddr = format!("{to}:7078").parse().unwrap();
        let bind = move || {
            let s = UdpSocket::bind(target).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let receiver = match to_ns {
            Some(ns) => in_netns(&ns, bind),
            None => bind(),
        };
        in_netns(&self.pod_ns(from), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"ping", target).unwrap();
        });
        let mut buf = [0u8; 16];
        let (len, peer) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"ping");
        peer.ip()
    }

    fn node_routes(&self, i: u8) -> String {
        ip(&[
            "netns",
            "exec",
            &self.node_ns(i),
            "ip",
            "route",
            "show",
            "proto",
            "77",
        ])
    }

    /// What is left of this test on the host: namespaces and links named after it.
    fn leftovers(&self) -> Vec<String> {
        let p = self.prefix();
        let netns = ip(&["netns", "list"]);
        let links = ip(&["-o", "link", "show"]);
        netns
            .lines()
            .chain(links.lines())
            .filter(|l| l.contains(&p))
            .map(str::to_string)
            .collect()
    }

    fn remove(&self) {
        for i in 1..=NODES {
            // The host end of a node's link, at once (a namespace's links go asynchronously).
            let host_end = format!("{}h{i}", self.prefix());
            let _ = Command::new("ip").args(["link", "del", &host_end]).output();
            for ns in [self.node_ns(i), self.pod_ns(i)] {
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remove();
    }
}

fn pods_reach_each_other_across_nodes(c: &Cluster) {
    let all: Vec<u8> = (1..=NODES).collect();
    for i in 1..=NODES {
        let applied = c.program(i, &all);
        assert!(applied.added > 0, "node {i}: {applied:?}");
        // A second reconcile of the same nodes changes nothing.
        assert_eq!(c.program(i, &all), kumo_net::Applied::default(), "node {i}");
    }
    for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 2)] {
        assert!(c.ping(from, &c.pod_ip(to)), "ping pod {from} -> pod {to}");
        // No NAT between pods: the receiver sees the sender's pod IP.
        let want: IpAddr = c.pod_ip(from).parse().unwrap();
        assert_eq!(c.tcp(from, to), want, "tcp pod {from} -> pod {to}");
        assert_eq!(
            c.udp(from, Some(c.pod_ns(to)), &c.pod_ip(to)),
            want,
            "udp pod {from} -> pod {to}"
        );
    }
    // Leaving the cluster: masqueraded to the node's address.
    let seen = c.udp(2, None, &c.outside_addr());
    assert_eq!(seen, c.node_addr(2).parse::<IpAddr>().unwrap());

    // Node 3 leaves: the others drop what reached it, and its pods are unreachable.
    let two = [1, 2];
    let applied = c.program(1, &two);
    assert!(applied.removed > 0, "{applied:?}");
    c.program(2, &two);
    assert!(
        !c.node_routes(1).contains(&c.pod_cidr(3)),
        "{}",
        c.node_routes(1)
    );
    assert!(!c.ping(1, &c.pod_ip(3)));
    assert!(c.ping(1, &c.pod_ip(2)));
}

#[test]
fn vxlan_backend_connects_pods_on_three_nodes() {
    let c = Cluster::new(1, Backend::Vxlan);
    pods_reach_each_other_across_nodes(&c);
    let dev = ip(&[
        "netns",
        "exec",
        &c.node_ns(1),
        "ip",
        "-d",
        "link",
        "show",
        "kumo.vxlan",
    ]);
    assert!(dev.contains("vxlan id 1 local 172.31.211.1"), "{dev}");
    assert!(
        dev.contains("dstport 8472") && dev.contains("nolearning"),
        "{dev}"
    );
    assert!(dev.contains("mtu 1450"), "{dev}");
    // What `kumo down` does: the device and every kumo route go, and only they.
    let removed = block_in_netns(&c.node_ns(1), || async {
        let links = Links::connect().unwrap();
        (
            links.remove_all().await.unwrap(),
            links.remove_all().await.unwrap(),
        )
    });
    assert_eq!(removed, (true, false));
    assert_eq!(c.node_routes(1), "");
    let left = ip(&["netns", "exec", &c.node_ns(1), "ip", "-o", "link", "show"]);
    assert!(
        !left.contains("kumo.vxlan") && left.contains("kbr"),
        "{left}"
    );
    drop(c);
    assert_eq!(
        Cluster {
            n: 1,
            backend: Backend::Vxlan
        }
        .leftovers_after_drop(),
        Vec::<String>::new()
    );
}

#[test]
fn host_gw_backend_connects_pods_on_three_nodes() {
    let c = Cluster::new(2, Backend::HostGw);
    pods_reach_each_other_across_nodes(&c);
    let routes = c.node_routes(1);
    assert!(
        routes.contains("10.212.2.0/24 via 172.31.212.2"),
        "{routes}"
    );
    drop(c);
    assert_eq!(
        Cluster {
            n: 2,
            backend: Backend::HostGw
        }
        .leftovers_after_drop(),
        Vec::<String>::new()
    );
}

impl Cluster {
    /// The leftovers, without removing anything more (the drop of this probe removes nothing
    /// that is not already gone).
    fn leftovers_after_drop(self) -> Vec<String> {
        let left = self.leftovers();
        std::mem::forget(self);
        left
    }
}
