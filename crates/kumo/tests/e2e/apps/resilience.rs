//! Replicas that crash, vanish, sit on a lost node, or whose agent restarts.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_and_deleted_replicas_are_replaced() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    c.apply("crash.json", &app_manifest("crash", 2, "1"));
    wait_app(&client, "crash", "2 ready replicas", serving(1, 2)).await;
    let pods = web_pods(&client, "crash").await;

    // A crash restarts the replica in place; it serves again once ready.
    let victim = &pods[0];
    let pid = container_pid(victim).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let name = victim.metadata.name.clone();
    wait_pod(&client, "default", &name, T, |p| {
        pod_ready(p)
            && p.status
                .as_ref()
                .is_some_and(|s| s.container_statuses[0].restart_count >= 1)
    })
    .await;

    // A deleted replica is recreated (a new pod), and the app is whole again.
    client
        .delete::<Pod>("default", &pods[1].metadata.name, Some(0))
        .await
        .unwrap();
    wait_app(&client, "crash", "a replacement", |a| serving(1, 2)(a)).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = web_pods(&client, "crash").await;
        let fresh = now.iter().any(|p| {
            p.metadata.name != pods[0].metadata.name
                && p.metadata.name != pods[1].metadata.name
                && pod_ready(p)
        });
        if fresh {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replacement: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_app(&client, "crash", "2 ready replicas", serving(1, 2)).await;
    let names = web_pods(&client, "crash")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name)
        .collect();
    reaches_all(router, "crash.test", &names).await;

    // Deleting the app takes its replicas and releases with it.
    ok(&c.kumo(&["delete", "app", "crash"]));
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let pods = web_pods(&client, "crash").await;
        let releases = client
            .list::<Release>(Some("default"), &Default::default())
            .await
            .unwrap()
            .items;
        if pods.is_empty() && releases.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {pods:#?} {releases:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(router, "crash.test", "/").await.unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_over_zones_and_leave_a_lost_node() {
    let c = Cluster::up(&["--labels", "kumo.dev/zone=a", "--node-grace", "3s"]);
    let agent_dir = c.dir.path().join("agent-n2");
    let agent = std::process::Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &c.url,
            "--join",
            &c.join_token(),
            "--ca-file",
            c.ca_file().to_str().unwrap(),
            "--node-name",
            "n2",
        ])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
        .args([
            "--labels",
            "kumo.dev/zone=b",
            "--data-dir",
            agent_dir.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn agent");
    let agent = RouterProcess(agent);
    let client = c.client();
    let deadline = tokio::time::Instant::now() + T;
    while client
        .get_opt::<kumo_api::Node>("", "n2")
        .await
        .unwrap()
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "n2 never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.apply("spread.json", &app_manifest("spread", 2, "1"));
    wait_app(&client, "spread", "2 ready replicas", serving(1, 2)).await;
    let nodes: std::collections::BTreeSet<String> = web_pods(&client, "spread")
        .await
        .iter()
        .filter_map(|p| p.spec.node_name.clone())
        .collect();
    assert_eq!(nodes.len(), 2, "one replica per zone: {nodes:?}");

    // n2 goes silent: its replica is replaced on node-1 and the app is whole again.
    drop(agent);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let pods = web_pods(&client, "spread").await;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.spec.node_name.as_deref() == Some("node-1") && pod_ready(p))
            .collect();
        if live.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not replaced: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_app(&client, "spread", "2 ready replicas", serving(1, 2)).await;
}

fn spawn_agent(c: &Cluster, dir: &std::path::Path) -> RouterProcess {
    let child = std::process::Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &c.url,
            "--join",
            &c.join_token(),
            "--ca-file",
            c.ca_file().to_str().unwrap(),
            "--node-name",
            "n1",
        ])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
        .args(["--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn agent");
    RouterProcess(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_keeps_ready_replicas_serving() {
    use std::io::BufRead;
    let c = Cluster::start_with(vec!["server".into()]);
    // `kumo server` holds `default` to baseline: these pods run as host processes.
    c.privileged_namespace("default");
    let agent_dir = c.dir.path().join("agent-n1");
    let agent = spawn_agent(&c, &agent_dir);
    let mut child = std::process::Command::new(kumo_exe())
        .args([
            "router",
            "--server",
            &c.url,
            "--ca-file",
            c.ca_file().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUMO_TOKEN", &c.token)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kumo router");
    let stdout = child.stdout.take().unwrap();
    let _router_process = RouterProcess(child);
    let line = std::io::BufReader::new(stdout)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let router: SocketAddr = line
        .strip_prefix("kumo: router listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let client = c.client();
    c.apply("steady.json", &app_manifest("steady", 2, "1"));
    wait_app(&client, "steady", "v1 serving", serving(1, 2)).await;
    let deadline = tokio::time::Instant::now() + T;
    while get(router, "steady.test", "/").await.unwrap().0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent dies and comes back; its replicas run on, and stay ready and routed.
    let load = Load::start(router, "steady.test");
    drop(agent);
    let restarted = chrono::Utc::now();
    let _agent = spawn_agent(&c, &agent_dir);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let node: kumo_api::Node = client.get("", "n1").await.unwrap();
        let beat = node
            .status
            .as_ref()
            .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
            .and_then(|c| c.last_heartbeat_time);
        if beat.is_some_and(|b| b > restarted + chrono::Duration::seconds(2)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.stop().await;
    assert_eq!(versions(&seen), vec!["1"]);
    let app: App = client.get("default", "steady").await.unwrap();
    assert!(serving(1, 2)(&app), "{:?}", app.status);
}
