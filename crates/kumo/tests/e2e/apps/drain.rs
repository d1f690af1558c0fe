//! `kumo cordon`/`drain` with a second node: an App under load moves off a drained node with
//! no failed request (each replica goes only once its replacement is Ready on the other node),
//! an MLTask is stopped gracefully and runs again on the other node without losing an attempt;
//! a drain that would lose a bare pod is refused and changes nothing; unknown nodes are named.

use super::*;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::Node;

/// A second agent on this host (process pods only, so no pod network), killed when dropped.
fn join_agent(c: &Cluster, name: &str) -> RouterProcess {
    let dir = c.dir.path().join(format!("agent-{name}"));
    let child = std::process::Command::new(kumo_exe())
        .args(["agent", "--server", &c.url, "--join", &c.join_token()])
        .args(["--ca-file", c.ca_file().to_str().unwrap()])
        .args(["--node-name", name, "--listen", "127.0.0.1:0"])
        .args(["--heartbeat-interval", "1s", "--backoff-base", "200ms"])
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn kumo agent");
    RouterProcess(child)
}

async fn wait_ready_node(client: &Client, name: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(Some(node)) = client.get_opt::<Node>("", name).await {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.status == kumo_api::ConditionStatus::True);
            if ready {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {name} not Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn failed(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_an_app_under_load_to_another_node_without_a_failed_request() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    let _n2 = join_agent(&c, "node-2");
    wait_ready_node(&client, "node-2").await;

    // Unknown nodes are named.
    for verb in ["cordon", "uncordon", "drain"] {
        let err = failed(&c.kumo(&[verb, "ghost"]));
        assert!(err.contains("node \"ghost\" not found"), "{verb}: {err}");
    }
    let err = failed(&c.kumo(&["drain", "node-1", "--timeout", "9999999h"]));
    assert!(err.contains("--timeout"), "{err}");

    // Everything on node-1 for now: node-2 is cordoned while the pods start.
    ok(&c.kumo(&["cordon", "node-2"]));
    let again = ok(&c.kumo(&["cordon", "node-2"]));
    assert!(again.contains("node/node-2 already cordoned"), "{again}");
    let get = ok(&c.kumo(&["get", "nodes"]));
    assert!(get.contains("SchedulingDisabled"), "{get}");
    c.apply(
        "sleeper.yaml",
        &process_pod("sleeper", "Always", "exec sleep 1000"),
    );
    c.apply("web.json", &app_manifest("web", 2, "1"));
    wait_app(&client, "web", "v1 serving", serving(1, 2)).await;
    wait_pod(&client, "default", "sleeper", T, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == kumo_api::PodPhase::Running)
    })
    .await;
    // An MLTask replica that checkpoints when it is told to stop (SIGTERM).
    let ckpt = c.dir.path().join("ckpt");
    let script = format!(
        "trap 'touch {}; exit 0' TERM; while true; do sleep 0.1; done",
        ckpt.display()
    );
    let submit = c.kumo(&[
        "submit",
        "train",
        "--runtime",
        "process",
        "-d",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    ok(&submit);
    let running = wait_task_running(&client, "node-1").await;
    ok(&c.kumo(&["uncordon", "node-2"]));

    // A drain that would lose the bare pod is refused before it changes anything.
    let err = failed(&c.kumo(&["drain", "node-1"]));
    assert!(
        err.contains("default/sleeper") && err.contains("--force"),
        "{err}"
    );
    let node: Node = client.get("", "node-1").await.unwrap();
    assert!(
        !node.spec.unschedulable,
        "a refused drain cordoned the node"
    );

    // Under load, the drain moves both replicas to node-2; no request fails.
    reaches_all(router, "web.test", &ready_names(&client, "web").await).await;
    let load = Load::start(router, "web.test");
    let (config, home) = (c.config_path(), c.dir.path().to_path_buf());
    let drain = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kumo_exe())
            .args(["drain", "node-1", "--force", "--timeout", "60s"])
            .env("KUMO_CONFIG", config)
            .env("HOME", home)
            .output()
            .expect("kumo drain")
    })
    .await
    .unwrap();
    let seen = load.stop().await;
    let said = ok(&drain);
    for line in [
        "node/node-1 cordoned",
        "evicting pod default/sleeper",
        "pod/sleeper evicted",
        "node/node-1 drained",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    assert_eq!(versions(&seen), ["1"], "every request answered by v1");
    assert!(seen.len() > 10, "the load ran: {}", seen.len());
    let pods = web_pods(&client, "web").await;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(pods
        .iter()
        .all(|p| p.spec.node_name.as_deref() == Some("node-2")));
    wait_app(&client, "web", "v1 serving on node-2", serving(1, 2)).await;
    assert!(client
        .get_opt::<Pod>("default", "sleeper")
        .await
        .unwrap()
        .is_none());
    // The task was stopped gracefully (it checkpointed), went back to its queue and runs on
    // node-2 with its attempts as they were.
    assert!(ckpt.exists(), "the replica was not stopped with SIGTERM");
    let moved = wait_task_running(&client, "node-2").await;
    let attempts = |t: &MLTask| t.status.as_ref().map(|s| s.attempts);
    assert_eq!(attempts(&moved), attempts(&running));
    let events: Vec<String> = client
        .list::<kumo_api::Event>(Some("default"), &ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name == "train")
        .map(|e| format!("{}: {}", e.reason, e.message))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Evicted: evicted: replica pod train-")),
        "{events:#?}"
    );
    ok(&c.kumo(&["uncordon", "node-1"]));
}

/// Waits until MLTask `train` runs with its replica on `node`.
async fn wait_task_running(client: &Client, node: &str) -> MLTask {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let task: MLTask = client.get("default", "train").await.unwrap();
        let on_node = task.status.as_ref().is_some_and(|s| {
            s.phase == TaskPhase::Running
                && s.replicas.iter().all(|r| r.node.as_deref() == Some(node))
        });
        if on_node {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "train not running on {node}: {:#?}",
            task.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
