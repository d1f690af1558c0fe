//! Several nodes on one machine ([`MultiNode`]): each in its own network namespace, reaching
//! the control plane over a bridge; `kumo down` on one of them.

use crate::harness::*;
use crate::multinode::*;
use kumo_api::Pod;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);
const NS: &str = "multi";

fn pinned_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: \"{BUSYBOX}\"\n    imagePullPolicy: IfNotPresent\n    command: [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    )
}

/// The cgroup hierarchies' directories of a cgroup parent that exist.
fn parent_cgroups(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroups")
        .flatten()
        .map(|h| h.path().join(parent))
        .filter(|d| d.is_dir())
        .collect()
}

/// The pids in every cgroup under `dir`.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    pids
}

/// The pids of the processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (String::from_utf8_lossy(&cmd).contains(&needle) && process_alive(pid)).then_some(pid)
        })
        .collect()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The link names in node `netns`.
fn links_in(netns: &str) -> Vec<String> {
    let out = in_netns(netns, "ip", &["-o", "link", "show"]);
    text(&out)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The nat table's rules in node `netns`.
fn nat_rules_in(netns: &str) -> String {
    text(&in_netns(netns, "iptables", &["-w", "-t", "nat", "-S"]))
}

/// What of node `node` is on the machine: processes, mounts, cgroups, links, chains, pod
/// network namespaces and leases; empty when nothing.
fn leftovers(node: &NodeSpec) -> Vec<String> {
    let mut left = Vec::new();
    for pid in processes_naming(&node.data_dir) {
        left.push(format!("process {pid}"));
    }
    for dir in parent_cgroups(node.cgroup_parent.as_str()) {
        left.push(format!("cgroup {}", dir.display()));
        for pid in pids_under(&dir).into_iter().filter(|p| process_alive(*p)) {
            left.push(format!("process {pid} in {}", dir.display()));
        }
    }
    for m in mounts_under(&node.data_dir) {
        left.push(format!("mount {m}"));
    }
    for l in links_in(&node.netns) {
        if l != "lo" && l != "eth0" {
            left.push(format!("link {l}"));
        }
    }
    for rule in nat_rules_in(&node.netns).lines() {
        if rule.contains("KUMO") || rule.contains("CNI-") {
            left.push(format!("rule {rule}"));
        }
    }
    let net = node.data_dir.join("net");
    for sub in ["netns", "pods", "ipam/kumo"] {
        for e in std::fs::read_dir(net.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.parse::<std::net::IpAddr>().is_ok() || sub != "ipam/kumo" {
                left.push(format!("{sub}/{name}"));
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_namespaces_run_pinned_pods_and_kumo_down_takes_one_away() {
    let mut mn = MultiNode::start(3).await;
    let c = &mn.cluster;
    let client = c.client();
    for node in &mn.nodes {
        let pid = node.agent_pid().expect("agent").to_string();
        let out = std::process::Command::new("nsenter")
            .args(["--target", &pid, "--uts", "hostname"])
            .output()
            .expect("nsenter");
        assert_eq!(text(&out).trim(), node.name, "the node's own hostname");
    }
    c.privileged_namespace(NS);
    for (i, node) in mn.nodes.iter().enumerate() {
        c.apply(
            &format!("p{i}.yaml"),
            &pinned_pod(&format!("p{i}"), &node.name),
        );
    }
    let mut pods: Vec<Pod> = Vec::new();
    for (i, node) in mn.nodes.iter().enumerate() {
        let p = wait_pod(&client, NS, &format!("p{i}"), T, pod_ready).await;
        let status = p.status.clone().unwrap_or_default();
        assert_eq!(status.host_ip.as_deref(), Some(node.address.as_str()));
        let pod_ip = status.pod_ip.clone().expect("pod ip");
        let prefix = format!("10.124.{}.", mn.slot);
        let last: u32 = pod_ip
            .strip_prefix(&prefix)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("pod ip {pod_ip} outside {}", node.pod_cidr));
        assert!(
            (64 * i as u32..64 * (i as u32 + 1)).contains(&last),
            "pod ip {pod_ip} outside {}",
            node.pod_cidr
        );
        pods.push(p);
    }
    // Each node has its own things before `kumo down`: the test below would pass vacuously
    // otherwise.
    let victim = 1;
    let before = leftovers(&mn.nodes[victim]);
    for kind in ["process", "cgroup", "mount", "link", "rule", "netns/"] {
        assert!(
            before.iter().any(|l| l.starts_with(kind)),
            "node{victim} has no {kind} before kumo down: {before:#?}"
        );
    }
    let survivors: Vec<(usize, Vec<i32>)> = [0, 2]
        .into_iter()
        .map(|i| {
            let uid = pods[i].metadata.uid.clone().unwrap();
            let pids = pids_under(
                &Path::new("/sys/fs/cgroup/pids")
                    .join(mn.nodes[i].cgroup_parent.as_str())
                    .join(uid),
            );
            assert!(!pids.is_empty(), "p{i} has no process");
            (i, pids)
        })
        .collect();

    let out = mn.down(victim);
    let printed = text(&out);
    assert!(
        out.status.success(),
        "kumo down: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = &mn.nodes[victim];
    for line in [
        "removed process ".to_string(),
        "removed mount ".to_string(),
        "removed cgroup ".to_string(),
        format!(
            "removed pod network {}",
            pods[victim].metadata.uid.clone().unwrap()
        ),
        format!("removed link {}", node.pod_bridge),
        format!("removed iptables chain nat KUMO-MASQ-{}", node.pod_bridge),
    ] {
        assert!(printed.contains(&line), "{line:?} not in {printed}");
    }
    assert_eq!(leftovers(node), Vec::<String>::new(), "{printed}");
    // A second run finds nothing.
    let again = mn.down(victim);
    assert!(again.status.success());
    assert_eq!(text(&again), "kumo down: nothing to remove\n");

    // The other nodes are untouched: their containers' processes, bridges and pods run on.
    for (i, pids) in survivors {
        for pid in pids {
            assert!(process_alive(pid), "p{i}'s process {pid} was killed");
        }
        let node = &mn.nodes[i];
        assert!(links_in(&node.netns).contains(&node.pod_bridge));
        assert!(nat_rules_in(&node.netns).contains(&format!("KUMO-MASQ-{}", node.pod_bridge)));
        let p = wait_pod(&client, NS, &format!("p{i}"), T, pod_ready).await;
        assert_eq!(p.metadata.uid, pods[i].metadata.uid);
    }
}

/// Whether the scheduler reported the pod unschedulable (`PodScheduled` False).
fn unschedulable(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        kumo_api::meta::find_condition(&s.conditions, "PodScheduled")
            .is_some_and(|c| c.status == kumo_api::ConditionStatus::False)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_takes_no_new_pod_until_uncordoned() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let stdout = |args: &[&str]| {
        let out = c.kumo(args);
        assert!(
            out.status.success(),
            "kumo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    };
    c.apply("before.yaml", &process_pod("before", "Always", "sleep 600"));
    wait_pod(&client, "default", "before", T, pod_ready).await;
    assert_eq!(stdout(&["cordon", "node-1"]), "node/node-1 cordoned\n");
    assert_eq!(
        stdout(&["cordon", "node-1"]),
        "node/node-1 already cordoned\n"
    );
    let nodes = stdout(&["get", "nodes"]);
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    c.apply("after.yaml", &process_pod("after", "Always", "sleep 600"));
    let p = wait_pod(&client, "default", "after", T, unschedulable).await;
    assert_eq!(p.spec.node_name, None);
    // The pod already there runs on.
    let before = wait_pod(&client, "default", "before", T, pod_ready).await;
    assert!(process_alive(container_pid(&before).expect("pid")));
    assert_eq!(stdout(&["uncordon", "node-1"]), "node/node-1 uncordoned\n");
    assert!(!stdout(&["get", "nodes"]).contains("SchedulingDisabled"));
    wait_pod(&client, "default", "after", T, pod_ready).await;
    // An unknown node is named.
    for verb in ["cordon", "uncordon"] {
        let out = c.kumo(&[verb, "nope"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("node \"nope\" not found"), "{err}");
    }
}
