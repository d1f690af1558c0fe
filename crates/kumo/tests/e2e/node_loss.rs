//! Many machines, one of them lost or drained ([`MultiNode`]: agents in network namespaces, runc
//! containers): a node whose agent hangs and whose network is cut goes NotReady, its App
//! replicas are replaced on the other nodes and its MLTask fails over (its GPU taken elsewhere);
//! when it comes back, its agent stops what no longer belongs to it, so nothing runs twice. A
//! drain moves an App's container replicas off a node under load through a router on the host
//! with no failed request.

use crate::apps::{get, serving, wait_app};
use crate::harness::*;
use crate::multinode::*;
use crate::nodes::pids_under;
use kumo_api::app::App;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::{ConditionStatus, Node, Pod};
use kumo_client::{Client, ListParams};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// An App of `replicas` busybox httpd containers answering `HOSTNAME` on `NAME.test`.
fn app(name: &str, replicas: i32) -> String {
    let script = "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec /bin/busybox httpd -f -p $PORT -h /www";
    serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": name},
        "spec": {
            "image": BUSYBOX,
            "processes": {"web": {"command": ["/bin/busybox", "sh", "-c", script], "replicas": replicas, "port": 8080}},
            "healthcheck": {"path": "/", "timeoutSeconds": 1},
            "domains": [format!("{name}.test")],
            "deploy": {"drainSeconds": 1, "timeoutSeconds": 60}
        }
    })
    .to_string()
}

async fn app_pods(client: &Client, app: &str) -> Vec<Pod> {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/app={app}")),
        )
        .await
        .expect("list pods")
        .items
}

fn node_of(p: &Pod) -> &str {
    p.spec.node_name.as_deref().unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().expect("uid")
}

/// The node's Ready condition's status.
async fn node_ready(client: &Client, name: &str) -> Option<ConditionStatus> {
    let node: Node = client.get("", name).await.ok()?;
    node.status
        .as_ref()
        .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
        .map(|c| c.status)
}

/// Polls `what` until it returns `Some`, for at most [`T`]; panics with `what`'s last
/// description of the state otherwise.
async fn until<F, Fut, R>(what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R, String>>,
{
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match f().await {
            Ok(r) => return r,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not within {T:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The live main processes of pod `uid`'s containers on `node`: those in its cgroups whose
/// parent is not (a shell's `sleep` or httpd's child for one request come and go).
fn pod_processes(node: &NodeSpec, uid: &str) -> Vec<i32> {
    let dir = Path::new("/sys/fs/cgroup/pids")
        .join(node.cgroup_parent.as_str())
        .join(uid);
    let pids = pids_under(&dir);
    let parent = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            })
    };
    pids.iter()
        .copied()
        .filter(|p| process_alive(*p) && parent(*p).is_some_and(|pp| !pids.contains(&pp)))
        .collect()
}

/// The paths under `dir` (to `depth` levels, links not followed) whose name contains `needle`.
fn paths_naming(dir: &Path, needle: &str, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains(needle) {
            out.push(e.path().display().to_string());
        }
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(paths_naming(&e.path(), needle, depth - 1));
        }
    }
    out
}

/// The task's single replica (node, GPUs, pod) while it runs.
fn running_replica(t: &MLTask) -> Option<(String, Vec<String>, String)> {
    let s = t.status.as_ref()?;
    let r = s.replicas.first()?;
    let running = s.phase == TaskPhase::Running && r.phase == Some(kumo_api::PodPhase::Running);
    Some((r.node.clone()?, r.gpus.clone(), r.pod.clone())).filter(|_| running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_and_on_return_runs_nothing_twice() {
    lost_node(AgentCut::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_whose_agent_died_stops_the_old_pods_when_it_restarts() {
    lost_node(AgentCut::Killed).await;
}

/// node0, holding two App replicas and a one-GPU task, is cut off (its agent stopped as `how`
/// says, its link down) and comes back.
async fn lost_node(how: AgentCut) {
    let mut mn = MultiNode::start_with(
        3,
        Options {
            server_args: ["--node-grace", "4s", "--task-backoff", "1s"]
                .map(String::from)
                .to_vec(),
            agent_args: ["--fake-gpus", "1"].map(String::from).to_vec(),
            pod_cidr_per_node: true,
        },
    )
    .await;
    let c = &mn.cluster;
    let client = c.client();
    c.privileged_namespace("default");
    // Two App replicas and a one-GPU task, all on node0 (the others are cordoned meanwhile):
    // node0 is the one lost.
    let cordon = |verb: &str, node: &str| {
        let out = c.kumo(&[verb, node]);
        assert!(out.status.success(), "kumo {verb} {node}: {out:?}");
    };
    for n in ["node1", "node2"] {
        cordon("cordon", n);
    }
    c.apply("web.json", &app("web", 2));
    let out = c.kumo(&[
        "submit",
        "train",
        "--image",
        BUSYBOX,
        "--gpus",
        "1",
        "-d",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    assert!(out.status.success(), "submit: {out:?}");
    wait_app(&client, "web", "2 ready replicas", serving(1, 2)).await;
    let task = until("train running", || async {
        let t: MLTask = client
            .get("default", "train")
            .await
            .map_err(|e| e.to_string())?;
        running_replica(&t)
            .map(|r| (t.clone(), r))
            .ok_or(format!("{:#?}", t.status))
    })
    .await;
    for n in ["node1", "node2"] {
        cordon("uncordon", n);
    }
    let (task, (lost_name, gpus, task_pod)) = task;
    assert_eq!(lost_name, "node0");
    let attempts = task.status.as_ref().map(|s| s.attempts).unwrap_or(0);
    assert_eq!(gpus.len(), 1, "{gpus:?}");
    let x = 0;
    let pods = app_pods(&client, "web").await;
    assert!(pods.iter().all(|p| node_of(p) == lost_name), "{pods:#?}");
    let old_replicas: Vec<String> = pods.iter().map(uid).collect();
    let old_task: Pod = client.get("default", &task_pod).await.unwrap();
    let mut old = old_replicas.clone();
    old.push(uid(&old_task));
    let node = &mn.nodes[x];
    let old_pids: Vec<i32> = old.iter().flat_map(|u| pod_processes(node, u)).collect();
    for u in &old {
        assert!(!pod_processes(node, u).is_empty(), "pod {u} has no process");
    }

    // The node goes silent: its agent hangs, its network is cut; its containers run on.
    mn.cut(x, how);
    until("the lost node NotReady", || async {
        match node_ready(&client, &lost_name).await {
            Some(ConditionStatus::True) | None => Err("still Ready".to_string()),
            Some(_) => Ok(()),
        }
    })
    .await;
    // Its App replicas are replaced elsewhere, and the app is whole again.
    until("the replicas replaced", || async {
        let pods = app_pods(&client, "web").await;
        let ready = pods
            .iter()
            .filter(|p| pod_ready(p) && node_of(p) != lost_name)
            .count();
        (ready == 2 && pods.len() == 2)
            .then_some(())
            .ok_or(format!("{pods:#?}"))
    })
    .await;
    wait_app(&client, "web", "2 ready replicas", serving(1, 2)).await;
    // The task runs a new attempt on another node, on a GPU there.
    let (moved, (node_now, gpus_now, _)) = until("train moved", || async {
        let t: MLTask = client
            .get("default", "train")
            .await
            .map_err(|e| e.to_string())?;
        match running_replica(&t) {
            Some(r) if r.0 != lost_name => Ok((t, r)),
            _ => Err(format!("{:#?}", t.status)),
        }
    })
    .await;
    assert_eq!(gpus_now.len(), 1, "{gpus_now:?} on {node_now}");
    assert_eq!(
        moved.status.as_ref().map(|s| s.attempts),
        Some(attempts + 1),
        "a lost node counts an attempt"
    );
    // The hard case: the lost node's containers still run, unseen by the control plane.
    for pid in &old_pids {
        assert!(process_alive(*pid), "{pid} stopped while its node was cut");
    }

    // The node comes back: its agent stops the containers of pods that are no longer its own.
    mn.restore(x);
    let node = &mn.nodes[x];
    until("the node Ready again", || async {
        match node_ready(&client, &lost_name).await {
            Some(ConditionStatus::True) => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    until("the old containers stopped", || async {
        let left: Vec<i32> = old_pids
            .iter()
            .copied()
            .filter(|p| process_alive(*p))
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .await;
    until("the old pods' cgroups removed", || async {
        let left: Vec<String> = old
            .iter()
            .filter(|u| {
                Path::new("/sys/fs/cgroup/pids")
                    .join(node.cgroup_parent.as_str())
                    .join(u)
                    .exists()
            })
            .cloned()
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .await;
    // Nor is anything of them left on the node: runtime records, bundles, sandboxes, mounts.
    until("the old pods' state removed", || async {
        let mut left = Vec::new();
        for u in &old {
            left.extend(paths_naming(&node.data_dir, u, 6));
            left.extend(
                mounts_under(&node.data_dir)
                    .into_iter()
                    .filter(|m| m.contains(u.as_str())),
            );
        }
        left.is_empty().then_some(()).ok_or(format!("{left:#?}"))
    })
    .await;
    // Exactly what should run does: two replicas off the returned node, one task replica.
    let pods = app_pods(&client, "web").await;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(pods
        .iter()
        .all(|p| pod_ready(p) && node_of(p) != lost_name && !old_replicas.contains(&uid(p))));
    let task_pods: Vec<Pod> = client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels("kumo.dev/mltask=train"),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(task_pods.len(), 1, "{task_pods:#?}");
    assert_eq!(node_of(&task_pods[0]), node_now);
    let t: MLTask = client.get("default", "train").await.unwrap();
    assert_eq!(running_replica(&t).map(|r| r.0), Some(node_now));
    let app: App = client.get("default", "web").await.unwrap();
    assert!(serving(1, 2)(&app), "{:?}", app.status);
}

/// Requests one after another through the router until stopped; every (status, body) seen.
fn load(
    router: SocketAddr,
    host: &'static str,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<(u16, String)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            match get(router, host, "/").await {
                Ok(r) => seen.push(r),
                Err(e) => seen.push((0, e.to_string())),
            }
        }
        seen
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_container_replicas_off_a_node_under_load_without_a_failed_request() {
    let mut mn = MultiNode::start(3).await;
    let c = &mn.cluster;
    let client = c.client();
    c.privileged_namespace("default");
    // The router runs on the host and reaches the pods through routes via their nodes.
    mn.route_pods_from_host();
    let router = mn.start_router();
    let addr = router.addr;
    c.apply("web.json", &app("web", 2));
    wait_app(&client, "web", "2 ready replicas", serving(1, 2)).await;
    let pods = app_pods(&client, "web").await;
    let names: BTreeSet<String> = pods.iter().map(|p| p.metadata.name.clone()).collect();
    let drained = node_of(&pods[0]).to_string();
    // Every replica answers through the router before the load starts.
    until("every replica routed", || {
        let names = names.clone();
        let mut seen = BTreeSet::new();
        async move {
            for _ in 0..20 {
                if let Ok((200, body)) = get(addr, "web.test", "/").await {
                    seen.insert(body.trim().to_string());
                }
            }
            names
                .is_subset(&seen)
                .then_some(())
                .ok_or(format!("{seen:?} of {names:?}"))
        }
    })
    .await;

    let (stop, task) = load(addr, "web.test");
    let (config, home) = (c.config_path(), c.dir.path().to_path_buf());
    let node = drained.clone();
    let drain = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kumo_exe())
            .args(["drain", &node, "--timeout", "60s"])
            .env("KUMO_CONFIG", config)
            .env("HOME", home)
            .output()
            .expect("kumo drain")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = task.await.unwrap();
    let said = String::from_utf8_lossy(&drain.stdout).to_string();
    assert!(
        drain.status.success(),
        "kumo drain: {said}{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    assert!(said.contains(&format!("node/{drained} drained")), "{said}");
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(code, _)| *code != 200).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the drain: {failed:?}"
    );
    assert!(seen.len() > 10, "the load ran: {}", seen.len());
    // The replicas end on the other nodes, ready and routed.
    let pods = app_pods(&client, "web").await;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(
        pods.iter().all(|p| node_of(p) != drained && pod_ready(p)),
        "{pods:#?}"
    );
    wait_app(&client, "web", "2 ready replicas", serving(1, 2)).await;

    // The drained node's agent restarted with another node's pod CIDR is refused, naming both
    // (its Node has its own in spec.podCIDR).
    let i = mn.nodes.iter().position(|n| n.name == drained).unwrap();
    let other = mn.nodes[(i + 1) % 3].pod_cidr.clone();
    let own = mn.nodes[i].pod_cidr.clone();
    let err = mn.refused_restart(i, &["--pod-cidr", &other]);
    for cidr in [&other, &own] {
        assert!(err.contains(cidr.as_str()), "{cidr} not in {err}");
    }
    assert!(err.contains("spec.podCIDR"), "{err}");
}
