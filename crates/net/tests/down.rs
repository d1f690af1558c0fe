//! `kumo down`'s network part on the real kernel (run as root, as CI does): a node's pod
//! networks, stray veths, masquerade chain, leases, bridge and extra links all go, and a second
//! run finds nothing. Bridge `kumotest200`, CIDR `10.123.200.0/24` (pods.rs uses 1..).

use kumo_net::{NetworkConfig, PodNetRequest, PodNetworks};
use std::path::Path;
use std::process::Command;

const BRIDGE: &str = "kumotest200";
const VXLAN: &str = "kt200vxlan";
const STRAY: &str = "kt200stray";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn chain_exists() -> bool {
    Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", &format!("KUMO-MASQ-{BRIDGE}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        for l in [BRIDGE, VXLAN, STRAY] {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
    }
}

#[tokio::test]
async fn down_removes_every_network_thing_of_the_node_and_then_finds_nothing() {
    // Leftovers of an interrupted run first; the guard takes this run's at the end.
    drop(Cleanup);
    let _cleanup = Cleanup;
    let dir = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::new(dir.path().join("net"));
    config.pod_cidr = "10.123.200.0/24".into();
    config.bridge = BRIDGE.into();
    let nets = PodNetworks::new(config.clone()).unwrap();
    for name in ["a", "b"] {
        nets.setup(&PodNetRequest {
            uid: format!("kt200-{name}"),
            namespace: "default".into(),
            name: name.into(),
            host_ports: vec![],
        })
        .await
        .unwrap();
    }
    // The agent is gone (killed, not drained); a veth whose record was lost, and the pod
    // network's tunnel device, are on the node too.
    drop(nets);
    ip(&[
        "link",
        "add",
        STRAY,
        "type",
        "veth",
        "peer",
        "name",
        "kt200peer",
    ]);
    ip(&["link", "set", STRAY, "master", BRIDGE]);
    ip(&[
        "link", "add", VXLAN, "type", "vxlan", "id", "200", "dstport", "48472",
    ]);
    let state = dir.path().join("net");
    assert_eq!(count(&state.join("netns")), 2);
    assert!(chain_exists());

    let down = kumo_net::down::down(config.clone(), &[VXLAN.to_string()]).await;
    assert_eq!(down.failed, Vec::<String>::new());
    let lines: Vec<String> = down.removed.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "pod network kt200-a".to_string(),
            "pod network kt200-b".to_string(),
            format!("veth {STRAY}"),
            format!("iptables chain nat KUMO-MASQ-{BRIDGE}"),
            format!("link {BRIDGE}"),
            format!("link {VXLAN}"),
        ]
    );
    for l in [BRIDGE, VXLAN, STRAY, "kt200peer"] {
        assert!(!link_exists(l), "{l} left");
    }
    assert!(!chain_exists());
    assert_eq!(count(&state.join("netns")), 0);
    assert_eq!(count(&state.join("pods")), 0);
    assert!(!state.join("ipam").exists(), "leases left");

    let again = kumo_net::down::down(config.clone(), &[VXLAN.to_string()]).await;
    assert!(
        again.removed.is_empty() && again.failed.is_empty(),
        "{again:?}"
    );

    // A --pod-bridge that names something else is left alone, and said so.
    ip(&[
        "link",
        "add",
        STRAY,
        "type",
        "veth",
        "peer",
        "name",
        "kt200peer",
    ]);
    let mut wrong = config;
    wrong.bridge = STRAY.into();
    let refused = kumo_net::down::down(wrong, &[]).await;
    assert!(refused.removed.is_empty(), "{refused:?}");
    assert_eq!(
        refused.failed,
        [format!("{STRAY} is not a bridge: left alone")]
    );
    assert!(link_exists(STRAY));
}

/// Removes network namespace `kt201` (and with it everything in it) when dropped.
struct Namespace;
impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", "kt201"]).output();
    }
}

#[test]
fn down_removes_kumos_routes_to_other_nodes_and_only_those() {
    drop(Namespace);
    let _ns = Namespace;
    ip(&["netns", "add", "kt201"]);
    let in_ns = |args: &[&str]| {
        let mut argv = vec!["-n", "kt201"];
        argv.extend_from_slice(args);
        ip(&argv)
    };
    // A node's underlay, host-gw's routes to two other nodes' pods (proto 77), and a route of
    // someone else's.
    // (A veth pair: this kernel has no dummy links.)
    in_ns(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    in_ns(&["link", "set", "eth1", "up"]);
    in_ns(&["addr", "add", "172.31.201.1/24", "dev", "eth0"]);
    in_ns(&["link", "set", "eth0", "up"]);
    for (cidr, via) in [
        ("10.123.202.0/24", "172.31.201.2"),
        ("10.123.203.0/24", "172.31.201.3"),
    ] {
        in_ns(&["route", "add", cidr, "via", via, "proto", "77"]);
    }
    in_ns(&["route", "add", "10.123.204.0/24", "via", "172.31.201.4"]);
    let routes = || {
        let out = Command::new("ip")
            .args(["-n", "kt201", "route", "show"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(routes().contains("proto 77"), "{}", routes());

    let dir = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::new(dir.path().join("net"));
    config.bridge = "kt201br".into();
    let down_in_ns = move |config: NetworkConfig| {
        std::thread::spawn(move || {
            let ns = std::fs::File::open("/run/netns/kt201").unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(kumo_net::down::down(config, &[]))
        })
        .join()
        .unwrap()
    };
    let down = down_in_ns(config.clone());
    assert_eq!(down.failed, Vec::<String>::new());
    let lines: Vec<String> = down.removed.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "route 10.123.202.0/24 via 172.31.201.2",
            "route 10.123.203.0/24 via 172.31.201.3"
        ]
    );
    let left = routes();
    assert!(!left.contains("proto 77"), "{left}");
    assert!(left.contains("10.123.204.0/24 via 172.31.201.4"), "{left}");
    let again = down_in_ns(config);
    assert!(
        again.removed.is_empty() && again.failed.is_empty(),
        "{again:?}"
    );
}
