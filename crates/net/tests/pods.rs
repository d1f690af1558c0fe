//! Pod networks on the real kernel with the real CNI plugins (run as root, as CI does).
//!
//! Each test owns a bridge `kumotest<N>` and the CIDR `10.123.<N>.0/24`, distinct from kumo's
//! defaults and from each other, so tests run in parallel beside a running `kumo up`. Each test
//! ends by checking that nothing of its own is left (veths on its bridge, namespace files,
//! leases, mounts, iptables rules naming its CIDR), then deletes its bridge.

use kumo_net::{
    NetError, NetworkConfig, PodNetRequest, PodNetwork, PodNetworks, PortMapping, Protocol,
};
use nix::sched::{setns, CloneFlags};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

struct TestNet {
    n: u8,
    bridge: String,
    dir: tempfile::TempDir,
    nets: PodNetworks,
}

impl TestNet {
    fn new(n: u8) -> TestNet {
        Self::with(n, |_| {})
    }

    fn with(n: u8, adjust: impl FnOnce(&mut NetworkConfig)) -> TestNet {
        host_enter();
        let bridge = format!("kumotest{n}");
        // A bridge left by an earlier, interrupted run.
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let dir = tempfile::tempdir().unwrap();
        let mut config = NetworkConfig::new(dir.path().join("net"));
        config.pod_cidr = format!("10.123.{n}.0/24");
        config.bridge = bridge.clone();
        adjust(&mut config);
        let nets = PodNetworks::new(config).unwrap();
        TestNet {
            n,
            bridge,
            dir,
            nets,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    fn request(&self, name: &str) -> PodNetRequest {
        PodNetRequest {
            uid: format!("kt{}-{name}", self.n),
            namespace: "default".into(),
            name: name.into(),
            host_ports: vec![],
        }
    }

    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// What this test could leak, counted.
    fn footprint(&self) -> Footprint {
        let state = self.state_dir();
        Footprint {
            veths: if self.bridge_exists() {
                run_ok("ip", &["-o", "link", "show", "master", &self.bridge])
                    .lines()
                    .count()
            } else {
                0
            },
            netns_files: count_entries(&state.join("netns")),
            state_files: count_entries(&state.join("pods")),
            leases: std::fs::read_dir(state.join("ipam/kumo"))
                .map(|d| {
                    d.filter(|e| {
                        let name = e.as_ref().unwrap().file_name();
                        name.to_str().unwrap().parse::<IpAddr>().is_ok()
                    })
                    .count()
                })
                .unwrap_or(0),
            mounts: std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .nth(4)
                        .unwrap()
                        .starts_with(state.to_str().unwrap())
                })
                .count(),
            iptables_rules: iptables_rules(&format!("10.123.{}.", self.n)),
        }
    }

    /// Asserts that nothing is left, then deletes the bridge.
    async fn finish(self) {
        let removed = self.nets.cleanup_orphans(&HashSet::new()).await.unwrap();
        assert_eq!(
            removed,
            Vec::<String>::new(),
            "pods the test forgot to tear down"
        );
        assert_eq!(self.footprint(), Footprint::default());
        // Deleting the bridge removes its address and route; nothing else of it remains.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        assert!(!self.bridge_exists());
        assert_eq!(iptables_rules(&self.bridge), Vec::<String>::new());
    }
}

impl Drop for TestNet {
    /// After a failed assertion: take down whatever the test left, as best we can.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _ = rt.block_on(self.nets.cleanup_orphans(&HashSet::new()));
            });
        });
        // Whatever teardown could not remove must not outlive the test's temporary dir.
        for entry in std::fs::read_dir(self.state_dir().join("netns"))
            .into_iter()
            .flatten()
        {
            let path = entry.unwrap().path();
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        host_leave();
    }
}

/// What the plugins change on the host beyond kumo's bridge, as it was before the first test:
/// the bridge plugin turns on `net.ipv4.ip_forward` (for `isGateway`), and the portmap plugin
/// adds its shared `CNI-HOSTPORT-*` nat chains and their jumps.
struct HostBaseline {
    ip_forward: String,
    hostport_chains: bool,
}

/// The tests running now, and the baseline to restore when none is.
static HOST: Mutex<(usize, Option<HostBaseline>)> = Mutex::new((0, None));
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn host_enter() {
    let mut host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    if host.1.is_none() {
        host.1 = Some(HostBaseline {
            ip_forward: std::fs::read_to_string(IP_FORWARD)
                .unwrap()
                .trim()
                .to_string(),
            hostport_chains: iptables(&["-S", "CNI-HOSTPORT-DNAT"]).is_some(),
        });
    }
    host.0 += 1;
}

/// When the last running test ends, puts back what the plugins changed on the host and the
/// tests' pods needed, unless something else uses it now (a hostPort rule of another pod).
fn host_leave() {
    let mut host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    host.0 -= 1;
    let Some(baseline) = host.1.as_ref().filter(|_| host.0 == 0) else {
        return;
    };
    let in_use =
        iptables(&["-S", "CNI-HOSTPORT-DNAT"]).is_some_and(|rules| rules.lines().count() > 1);
    if !baseline.hostport_chains && !in_use {
        let dnat = [
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ];
        let masq = [
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ];
        // Plugins racing each other (parallel tests) may have added a jump twice.
        for (chain, rule) in [
            ("PREROUTING", &dnat[..]),
            ("OUTPUT", &dnat),
            ("POSTROUTING", &masq),
        ] {
            while iptables(&[&["-D", chain][..], rule].concat()).is_some() {}
        }
        for chain in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ] {
            iptables(&["-F", chain]);
            iptables(&["-X", chain]);
        }
    }
    if baseline.ip_forward == "0" {
        let _ = std::fs::write(IP_FORWARD, "0");
    }
}

/// Runs `iptables -w -t nat ARGS`, returning its output when it succeeds.
fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Footprint {
    veths: usize,
    netns_files: usize,
    state_files: usize,
    leases: usize,
    mounts: usize,
    iptables_rules: Vec<String>,
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn iptables_rules(needle: &str) -> Vec<String> {
    run_ok("iptables-save", &[])
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f` on a thread that has entered the network namespace at `netns` (processes it
/// starts and sockets it opens are in that namespace).
fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(netns).unwrap();
            setns(ns, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn ping(ip: IpAddr) -> bool {
    Command::new("busybox")
        .args(["ping", "-c1", "-W2", &ip.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

fn in_cidr(ip: IpAddr, n: u8) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 123, n])
}

#[tokio::test]
async fn two_pods_reach_each_other_and_the_host_reaches_them() {
    let t = TestNet::new(1);
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    let b = t.nets.setup(&t.request("b")).await.unwrap();
    assert_ne!(a.ip, b.ip);
    assert!(in_cidr(a.ip, 1) && in_cidr(b.ip, 1), "{a:?} {b:?}");
    assert_eq!(a.gateway, "10.123.1.1".parse::<IpAddr>().unwrap());
    assert!(a.netns_path.is_absolute() && a.netns_path.starts_with(t.state_dir()));
    assert_ne!(a.netns_path, b.netns_path);

    // Setting up again returns the same network.
    assert_eq!(t.nets.setup(&t.request("a")).await.unwrap(), a);
    let mut listed = t.nets.list();
    listed.sort_by(|x, y| x.uid.cmp(&y.uid));
    assert_eq!(listed, vec![a.clone(), b.clone()]);

    assert!(in_netns(&a.netns_path, || ping(b.ip)), "a cannot reach b");
    assert!(in_netns(&b.netns_path, || ping(a.ip)), "b cannot reach a");
    assert!(
        in_netns(&a.netns_path, || ping("127.0.0.1".parse().unwrap())),
        "lo is down in a"
    );
    assert!(ping(a.ip), "the host cannot reach a");
    // The pod's own view: eth0 with its IP, a default route through the gateway.
    let addrs = in_netns(&a.netns_path, || {
        run_ok("ip", &["-o", "addr", "show", "eth0"])
    });
    assert!(addrs.contains(&format!("inet {}/24", a.ip)), "{addrs}");
    let routes = in_netns(&a.netns_path, || run_ok("ip", &["route"]));
    assert!(
        routes.contains("default via 10.123.1.1 dev eth0"),
        "{routes}"
    );
    assert_eq!(t.footprint().veths, 2);

    for pod in [&a, &b] {
        t.nets.teardown(&pod.uid).await.unwrap();
        // Idempotent.
        t.nets.teardown(&pod.uid).await.unwrap();
    }
    assert!(!ping(a.ip), "a is still answering after teardown");
    assert_eq!(t.nets.list(), vec![]);
    t.finish().await;
}

#[tokio::test]
async fn host_port_reaches_a_listener_in_the_pod() {
    let t = TestNet::new(2);
    let host_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut req = t.request("web");
    req.host_ports = vec![PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let pod = t.nets.setup(&req).await.unwrap();
    let listener = in_netns(&pod.netns_path, || {
        TcpListener::bind("0.0.0.0:8080").unwrap()
    });

    // Through the node's loopback (portmap sets route_localnet on kumo's bridge for it) and
    // through the bridge gateway address.
    for target in [IpAddr::from([127, 0, 0, 1]), pod.gateway] {
        let server = std::thread::spawn({
            let listener = listener.try_clone().unwrap();
            move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(b"pong").unwrap();
                buf
            }
        });
        let mut conn = TcpStream::connect((target, host_port)).unwrap();
        conn.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        conn.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong", "via {target}");
        assert_eq!(&server.join().unwrap(), b"ping");
    }
    assert!(!iptables_rules(&format!("{}:8080", pod.ip)).is_empty());
    // The pod's socket keeps its namespace alive: close it before the teardown.
    drop(listener);

    t.nets.teardown(&pod.uid).await.unwrap();
    assert!(TcpStream::connect(("127.0.0.1", host_port)).is_err());
    t.finish().await;
}

#[tokio::test]
async fn a_restarted_agent_finds_and_tears_down_its_pods() {
    let t = TestNet::new(3);
    let pod = t.nets.setup(&t.request("a")).await.unwrap();

    // A fresh manager over the same state dir, as after an agent restart.
    let again = PodNetworks::new(t.nets.config().clone()).unwrap();
    assert_eq!(again.list(), vec![pod.clone()]);
    assert_eq!(again.setup(&t.request("a")).await.unwrap(), pod);
    assert!(ping(pod.ip));
    again.teardown(&pod.uid).await.unwrap();
    assert_eq!(t.nets.list(), vec![]);
    t.nets.teardown(&pod.uid).await.unwrap();
    t.finish().await;
}

#[tokio::test]
async fn fifty_setup_teardown_cycles_leak_nothing() {
    let t = TestNet::new(4);
    // The first pod creates the bridge; count from then on.
    let first = t.nets.setup(&t.request("first")).await.unwrap();
    let before = t.footprint();
    assert_eq!((before.veths, before.netns_files, before.leases), (1, 1, 1));
    let mut req = t.request("cycle");
    req.host_ports = vec![PortMapping {
        host_port: 30_444,
        container_port: 80,
        protocol: Protocol::Tcp,
    }];
    for i in 0..50 {
        req.uid = format!("kt4-cycle-{i}");
        let pod = t.nets.setup(&req).await.unwrap();
        assert!(in_cidr(pod.ip, 4));
        t.nets.teardown(&pod.uid).await.unwrap();
    }
    assert_eq!(t.footprint(), before);
    t.nets.teardown(&first.uid).await.unwrap();
    t.finish().await;
}

#[tokio::test]
async fn orphans_are_cleaned_and_live_pods_kept() {
    let t = TestNet::new(5);
    let mut nets = Vec::new();
    for name in ["a", "b", "c"] {
        nets.push(t.nets.setup(&t.request(name)).await.unwrap());
    }
    let live: HashSet<String> = [nets[1].uid.clone()].into();
    let removed = t.nets.cleanup_orphans(&live).await.unwrap();
    assert_eq!(removed, vec!["kt5-a".to_string(), "kt5-c".to_string()]);
    assert_eq!(t.nets.list(), vec![nets[1].clone()]);
    assert_eq!(t.footprint().veths, 1);
    assert!(ping(nets[1].ip));
    t.nets.teardown(&nets[1].uid).await.unwrap();
    t.finish().await;
}

#[tokio::test]
async fn a_failed_setup_leaves_nothing_behind() {
    // A /30 has room for the gateway and a single pod.
    let t = TestNet::with(6, |c| c.pod_cidr = "10.123.6.0/30".into());
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    let err = t.nets.setup(&t.request("b")).await.unwrap_err();
    match &err {
        NetError::Plugin {
            plugin,
            command,
            msg,
            details,
            ..
        } => {
            assert_eq!((plugin.as_str(), command.as_str()), ("bridge", "ADD"));
            assert!(
                format!("{msg} {details}").contains("no IP addresses available"),
                "{err}"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(!t.nets.netns_path("kt6-b").exists());
    assert_eq!(t.nets.list(), vec![a.clone()]);
    let f = t.footprint();
    assert_eq!(
        (f.veths, f.netns_files, f.state_files, f.leases, f.mounts),
        (1, 1, 1, 1, 1)
    );
    t.nets.teardown(&a.uid).await.unwrap();
    t.finish().await;
}

#[tokio::test]
async fn a_missing_plugin_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let t = TestNet::with(7, |c| c.cni_bin_dir = empty.path().to_path_buf());
    let err = t.nets.setup(&t.request("a")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cni plugin loopback not found at {}",
            empty.path().join("loopback").display()
        )
    );
    assert_eq!(t.nets.list(), Vec::<PodNetwork>::new());
    assert!(!t.bridge_exists());
    t.finish().await;
}

/// What a reboot does to a pod network kumo recorded on disk: the namespace mount is gone (and
/// with it the veth), and so are the iptables rules (the node's masquerade chain); the lease
/// files and kumo's record remain.
fn simulate_reboot(t: &TestNet, pod: &PodNetwork) {
    nix::mount::umount2(&pod.netns_path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let chain = format!("KUMO-MASQ-{}", t.bridge);
    let cidr = format!("10.123.{}.0/24", t.n);
    let comment = format!("kumo {} pod egress", t.bridge);
    let jump = [
        "-s",
        &cidr,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        &chain,
    ];
    while iptables(&[&["-D", "POSTROUTING"][..], &jump].concat()).is_some() {}
    if iptables(&["-F", &chain]).is_some() {
        assert!(iptables(&["-X", &chain]).is_some());
    }
}

/// Waits for the kernel's asynchronous clean-up of a namespace nothing holds any more.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn after_a_reboot_stale_networks_are_redone_or_removed() {
    let t = TestNet::new(8);
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    let b = t.nets.setup(&t.request("b")).await.unwrap();
    simulate_reboot(&t, &a);
    simulate_reboot(&t, &b);
    wait_for("the veths of unmounted namespaces to go", || {
        t.footprint().veths == 0
    });
    assert_eq!(t.footprint().leases, 2);

    // A pod that still exists gets a working network again; its old lease is released.
    let a2 = t.nets.setup(&t.request("a")).await.unwrap();
    assert_eq!(a2.netns_path, a.netns_path);
    assert!(ping(a2.ip));
    assert!(in_netns(&a2.netns_path, || ping(a2.gateway)));
    // A pod that is gone is cleaned up without its namespace.
    t.nets.teardown(&b.uid).await.unwrap();
    let f = t.footprint();
    assert_eq!(
        (f.veths, f.netns_files, f.state_files, f.leases),
        (1, 1, 1, 1)
    );
    t.nets.teardown(&a2.uid).await.unwrap();
    t.finish().await;
}

/// The node's masquerade chain for the test's bridge, as `iptables -S` prints it.
fn masq_rules(t: &TestNet) -> Vec<String> {
    iptables(&["-S", &format!("KUMO-MASQ-{}", t.bridge)])
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn egress_is_masqueraded_by_one_rule_set_while_any_pod_network_exists() {
    let t = TestNet::new(9);
    assert_eq!(masq_rules(&t), Vec::<String>::new());
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    let b = t.nets.setup(&t.request("b")).await.unwrap();
    let chain = format!("KUMO-MASQ-{}", t.bridge);
    assert_eq!(
        masq_rules(&t),
        vec![
            format!("-N {chain}"),
            format!("-A {chain} -d 10.123.9.0/24 -j RETURN"),
            format!("-A {chain} -d 224.0.0.0/4 -j RETURN"),
            format!("-A {chain} -j MASQUERADE"),
        ]
    );
    // One jump for the node, none per pod.
    let jumps = iptables(&["-S", "POSTROUTING"]).unwrap();
    assert_eq!(
        jumps.lines().filter(|l| l.contains("10.123.9.")).count(),
        1,
        "{jumps}"
    );
    t.nets.teardown(&a.uid).await.unwrap();
    assert_eq!(masq_rules(&t).len(), 4, "kept while b has a network");
    t.nets.teardown(&b.uid).await.unwrap();
    assert_eq!(masq_rules(&t), Vec::<String>::new());
    t.finish().await;
}

#[tokio::test]
async fn warm_networks_are_handed_to_pods_and_drained_at_the_end() {
    let t = TestNet::with(10, |c| c.warm_pool = 2);
    // The first pod waits for its own network; the pool is filled after it.
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    t.nets.fill_warm_pool().await;
    assert_eq!(t.nets.warm_ready(), 2);
    let f = t.footprint();
    assert_eq!(
        (f.veths, f.netns_files, f.state_files, f.leases),
        (3, 3, 3, 3)
    );

    let b = t.nets.setup(&t.request("b")).await.unwrap();
    assert_eq!(t.nets.warm_ready(), 1);
    // The pod's namespace file is its own, as for any other pod.
    assert_eq!(b.netns_path, t.nets.netns_path("kt10-b"));
    assert_eq!(b.uid, "kt10-b");
    assert!(in_cidr(b.ip, 10) && b.ip != a.ip);
    // A taken network works like any other: the host reaches it, it reaches the other pod.
    assert!(ping(b.ip));
    assert!(in_netns(&b.netns_path, || ping(a.ip)));
    // Asking again gives the same network; list shows pods only.
    assert_eq!(t.nets.setup(&t.request("b")).await.unwrap(), b);
    assert_eq!(t.nets.list(), vec![a.clone(), b.clone()]);

    // A fresh manager over the same dir (an agent restart) keeps b's network and removes the
    // warm ones the old one made.
    let again = PodNetworks::new(t.nets.config().clone()).unwrap();
    again.fill_warm_pool().await;
    assert!(ping(b.ip));
    let f = t.footprint();
    assert_eq!(
        (f.veths, f.netns_files, f.state_files, f.leases),
        (4, 4, 4, 4)
    );
    again.drain_warm_pool().await;
    again.fill_warm_pool().await;
    assert_eq!(again.warm_ready(), 0, "a drained pool stays empty");

    // The old manager's pool was swept away underneath it: it finds nothing usable there and
    // makes a network of its own.
    let c = t.nets.setup(&t.request("c")).await.unwrap();
    assert_eq!(c.netns_path, t.nets.netns_path("kt10-c"));
    assert!(ping(c.ip));
    t.nets.teardown(&c.uid).await.unwrap();
    t.nets.teardown(&b.uid).await.unwrap();
    assert!(!b.netns_path.exists());
    t.nets.teardown(&a.uid).await.unwrap();
    let f = t.footprint();
    assert_eq!(
        (f.veths, f.netns_files, f.state_files, f.leases),
        (0, 0, 0, 0)
    );
    t.finish().await;
}

#[tokio::test]
async fn a_warm_network_claimed_before_a_crash_stays_with_its_pod() {
    let t = TestNet::with(11, |c| c.warm_pool = 1);
    t.nets.fill_warm_pool().await;
    let pods_dir = t.state_dir().join("pods");
    let warm_file = std::fs::read_dir(&pods_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("warm-")
        })
        .unwrap();
    let warm_record = std::fs::read(&warm_file).unwrap();
    let a = t.nets.setup(&t.request("a")).await.unwrap();
    assert!(!warm_file.exists());
    // The crash: the warm record is still there beside the pod's.
    std::fs::write(&warm_file, &warm_record).unwrap();
    let again = PodNetworks::new(t.nets.config().clone()).unwrap();
    again.fill_warm_pool().await;
    assert!(!warm_file.exists(), "the stale warm record is removed");
    assert!(ping(a.ip), "the pod keeps its network");
    again.drain_warm_pool().await;
    again.teardown(&a.uid).await.unwrap();
    t.finish().await;
}
