//! Several `kumo server`s on one etcd: the second joins with the first's server token (the
//! CA and keys come sealed from etcd), one admin config trusts both, a write through one is
//! seen in order by a watch on the other, a token revoked through one is refused by the other
//! within a second, each loop has one leader; the scheduler and the MLTask controller fail
//! over when their server is killed (no pod bound twice, no task admitted twice), and a leader
//! cut off from etcd stops before another server takes over.

use crate::harness::*;
use kumo_api::lease::Lease;
use kumo_api::{Namespace, ObjectMeta, Pod};
use kumo_client::{Client, ClientConfig, ListParams, Watched};
use kumo_store::test_etcd::TestEtcd;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Short elections, so that failover is quick: a lease of 3 s, given up 2 s after the last
/// renewal.
const FAST_ELECTION: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "500ms",
];

fn store_flag(endpoint: &str) -> String {
    format!("etcd://{}", endpoint.trim_start_matches("http://"))
}

/// One `kumo server` process in `dir` (its data dir is `dir/data`, its log `dir/server.log`).
struct Server {
    dir: PathBuf,
    url: String,
    child: Option<Child>,
}

impl Server {
    /// Starts `kumo server` on `store` with `extra` flags and waits until it listens.
    fn start(dir: &Path, store: &str, extra: &[&str]) -> Server {
        Self::start_with_token(dir, store, extra, None)
    }

    /// As [`start`](Self::start), with `KUMO_SERVER_TOKEN` set to `token` when given.
    fn start_with_token(dir: &Path, store: &str, extra: &[&str], token: Option<&str>) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut command = Self::command(dir, store, extra);
        if let Some(token) = token {
            command.env("KUMO_SERVER_TOKEN", token);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn kumo server");
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("kumo: API server listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => panic!(
                    "kumo server in {} exited before listening: {:?}\n{}",
                    dir.display(),
                    child.wait(),
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                ),
            }
        };
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Server {
            dir: dir.to_path_buf(),
            url,
            child: Some(child),
        }
    }

    fn command(dir: &Path, store: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(kumo_exe());
        cmd.args(["server", "--listen", "127.0.0.1:0", "--store", store])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("HOME", dir)
            .env("RUST_LOG", "warn,kumo_client::leader=info")
            .env_remove("KUMO_SERVER_TOKEN")
            .env_remove("KUMO_STORE")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kumo server` that is expected to stop at start; its output.
    fn refused(dir: &Path, store: &str, extra: &[&str]) -> Output {
        Self::command(dir, store, extra)
            .output()
            .expect("run kumo server")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The holder identity of this server's loops.
    fn identity(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills what a test started under `dir` (agents, their pods) when dropped.
struct Cleanup(tempfile::TempDir);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let node = test_node(self.0.path(), Default::default());
        let scope = kumo_runtime::down::PodScope::Recorded;
        kumo_runtime::down::stop(&node, scope);
        kumo_runtime::down::release(&node, scope);
    }
}

/// The first server's admin config, pointed at `server`.
fn admin_at(first: &Server, server: &Server) -> ClientConfig {
    let admin = ClientConfig::load(&first.data().join("admin.config")).expect("admin.config");
    ClientConfig {
        server: server.url.clone(),
        ..admin
    }
}

/// Runs the CLI with `config`.
fn cli(config: &ClientConfig, dir: &Path, args: &[&str]) -> Output {
    let path = dir.join(format!("config-{}", config.server.replace([':', '/'], "_")));
    config.save(&path).unwrap();
    let out = Command::new(kumo_exe())
        .args(args)
        .env("KUMO_CONFIG", &path)
        .env("HOME", dir)
        .output()
        .expect("kumo cli");
    assert!(
        out.status.success(),
        "kumo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `kumo get leases -n kumo-system` as name → holder.
fn holders(config: &ClientConfig, dir: &Path) -> BTreeMap<String, String> {
    let out = cli(config, dir, &["get", "leases", "-n", "kumo-system"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let holder = if cols.len() == 3 { cols[1] } else { "" };
            (cols[0].to_string(), holder.to_string())
        })
        .collect()
}

/// Polls the Lease `kumo-system/NAME` until `holder` holds it; how long that took.
async fn wait_lease(client: &Client, name: &str, holder: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let lease = client.get::<Lease>("kumo-system", name).await;
        let now = lease
            .as_ref()
            .ok()
            .and_then(|l| l.spec.holder_identity.clone());
        if now.as_deref().is_some_and(|h| h.ends_with(holder)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "lease {name} not held by {holder} within {within:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_joins_with_the_server_token_and_shares_everything() {
    let etcd = TestEtcd::start().expect("etcd");
    let store = store_flag(&etcd.endpoint);
    let tmp = Cleanup(tempfile::tempdir().unwrap());
    let root = tmp.0.path();
    let a = Server::start(&root.join("a"), &store, &[]);
    let token_file = a.data().join("server-token");
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.trim().len(), 64, "{token:?}");

    // No token, a wrong token: clear errors, and the data dir is not made.
    let out = Server::refused(&root.join("none"), &store, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("this etcd already holds a kumo cluster: join it with --server-token-file"),
        "{}",
        stderr(&out)
    );
    let wrong = root.join("wrong-token");
    std::fs::write(&wrong, format!("{}\n", "ab".repeat(32))).unwrap();
    let out = Server::refused(
        &root.join("wrong"),
        &store,
        &["--server-token-file", wrong.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the server token does not open this cluster's bootstrap data"),
        "{}",
        stderr(&out)
    );
    assert!(!root.join("wrong/data").exists(), "a refused join wrote");
    // A data dir with a CA of its own: refused, naming the file.
    let other = root.join("other");
    let ca = kumo_pki::Ca::generate().unwrap();
    std::fs::create_dir_all(other.join("data/pki")).unwrap();
    std::fs::write(other.join("data/pki/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(other.join("data/pki/ca.key"), ca.key_pem()).unwrap();
    let out = Server::refused(
        &other,
        &store,
        &["--server-token-file", token_file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ca.crt is not the one of the cluster this etcd holds"),
        "{}",
        stderr(&out)
    );
    // --server-token-file is for servers on one etcd: with the embedded store it is refused.
    let out = Command::new(kumo_exe())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.join("redb/data"))
        .arg("--server-token-file")
        .arg(&token_file)
        .env("HOME", root)
        .env_remove("KUMO_STORE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--server-token-file joins servers on one etcd: it needs --store"),
        "{}",
        stderr(&out)
    );

    // The second server, joined with the first's token from the environment.
    let b = Server::start_with_token(&root.join("b"), &store, &[], Some(token.trim()));
    assert_eq!(
        std::fs::read_to_string(b.data().join("server-token")).unwrap(),
        token,
        "the joined server keeps the token for its restarts"
    );
    let pki = |s: &Server, f: &str| std::fs::read_to_string(s.data().join("pki").join(f)).unwrap();
    for f in ["ca.crt", "ca.key", "sa.key"] {
        assert_eq!(pki(&a, f), pki(&b, f), "{f}");
        assert_eq!(mode(&b.data().join("pki").join(f)), 0o600, "{f}");
    }
    assert_ne!(pki(&a, "apiserver.key"), pki(&b, "apiserver.key"));
    assert_eq!(
        std::fs::read_to_string(b.data().join("encryption-config.yaml")).unwrap(),
        std::fs::read_to_string(a.data().join("encryption-config.yaml")).unwrap()
    );

    // The first server's admin config works against the second: its TLS verifies.
    let on_a = Client::new(&admin_at(&a, &a)).unwrap();
    let on_b = Client::new(&admin_at(&a, &b)).unwrap();
    let listed = on_b
        .list::<Namespace>(None, &ListParams::default())
        .await
        .expect("the second server trusts the first's admin and is trusted");

    // Writes through the first, seen in order by a watch on the second.
    let rv = listed.metadata.resource_version.clone().unwrap_or_default();
    let mut watch = on_b
        .watch::<Namespace>(None, &ListParams::default(), &rv)
        .await
        .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("order-{i}")).collect();
    for name in &names {
        on_a.create(&Namespace {
            metadata: ObjectMeta::named(None, name),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut last_rv = 0u64;
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() < names.len() {
            match watch.next().await {
                Some(Ok(Watched::Added(ns))) if ns.metadata.name.starts_with("order-") => {
                    let rv: u64 = ns.metadata.resource_version.unwrap().parse().unwrap();
                    assert!(
                        rv > last_rv,
                        "resourceVersion went back: {rv} after {last_rv}"
                    );
                    last_rv = rv;
                    seen.push(ns.metadata.name);
                }
                Some(Ok(_)) => {}
                other => panic!("the watch on the second server ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the second server's watch saw only {seen:?}"));
    assert_eq!(seen, names);

    // A token made and revoked through the first is refused by the second within a second.
    let created = cli(
        &admin_at(&a, &a),
        root,
        &["token", "create", "viewer", "--user", "viewer"],
    );
    let secret = String::from_utf8_lossy(&created.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("  ").filter(|s| !s.contains(' ')))
        .expect("the secret")
        .to_string();
    let viewer = Client::new(&ClientConfig {
        token: secret,
        ..admin_at(&a, &b)
    })
    .unwrap();
    let code = |r: Result<_, kumo_client::ClientError>| r.err().and_then(|e| e.code());
    // Authenticated (RBAC grants it nothing): forbidden, not unauthenticated.
    let deadline = Instant::now() + Duration::from_secs(5);
    while code(viewer.list::<Namespace>(None, &ListParams::default()).await) != Some(403) {
        assert!(
            Instant::now() < deadline,
            "the second server never knew the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cli(&admin_at(&a, &a), root, &["token", "revoke", "viewer"]);
    let revoked = Instant::now();
    while code(viewer.list::<Namespace>(None, &ListParams::default()).await) != Some(401) {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the second server still accepts a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One holder per loop, one of the two servers.
    let ids = [a.identity(), b.identity()];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = holders(&admin_at(&a, &b), root);
        let names: Vec<&str> = now.keys().map(String::as_str).collect();
        if names == LOOPS
            && now.values().all(|h| {
                ids.iter()
                    .any(|id| !h.is_empty() && h.ends_with(id.as_str()))
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "leases: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kumo agent` joined to `server` as node n1, with a join token made through it.
fn agent(server: &Server, config: &ClientConfig, dir: &Path) -> Child {
    let out = cli(
        config,
        dir,
        &["token", "create", "join-n1", "--join", "--ttl", "1h"],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let join = text
        .split_whitespace()
        .skip_while(|w| *w != "--join")
        .nth(1)
        .unwrap_or_else(|| panic!("no join command in {text:?}"))
        .to_string();
    let agent_dir = dir.join("agent-n1");
    Command::new(kumo_exe())
        .args(["agent", "--server", &server.url, "--node-name", "n1"])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
        .args([
            "--no-pod-network",
            "--data-dir",
            agent_dir.to_str().unwrap(),
        ])
        .args(["--ca-file"])
        .arg(server.data().join("pki/ca.crt"))
        .args(["--join", &join])
        .env("RUST_LOG", "warn")
        .env_remove("KUMO_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kumo agent")
}

/// Follows every pod of `ns` from now and records each pod's node names in order.
async fn record_bindings(client: &Client, ns: &str) -> Arc<Mutex<BTreeMap<String, Vec<String>>>> {
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let list = client
        .list::<Pod>(Some(ns), &ListParams::default())
        .await
        .unwrap();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut watch = client
        .watch::<Pod>(Some(ns), &ListParams::default(), &rv)
        .await
        .unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = watch.next().await {
            let (Watched::Added(p) | Watched::Modified(p)) = event else {
                continue;
            };
            let mut seen = record.lock().unwrap();
            let nodes = seen.entry(p.metadata.name.clone()).or_default();
            let node = p.spec.node_name.clone().unwrap_or_default();
            if nodes.last() != Some(&node) {
                nodes.push(node);
            }
        }
    });
    seen
}

/// Creates the process pod `name` in `ns` through `client`.
async fn create_pod(client: &Client, ns: &str, name: &str) {
    let yaml = process_pod(name, "Never", "true");
    let mut pod: Pod = serde_yaml_ng::from_str(&yaml).unwrap();
    pod.metadata.namespace = Some(ns.to_string());
    client.create(&pod).await.expect("create pod");
}

/// Waits (bounded) until the node `name` is Ready.
async fn wait_node_ready(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let node = client.get::<kumo_api::Node>("", name).await.ok();
        let ready = node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .is_some_and(|s| {
                kumo_api::meta::find_condition(&s.conditions, "Ready")
                    .is_some_and(|c| c.status == kumo_api::ConditionStatus::True)
            });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "node {name} not Ready: {node:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fails_over_when_its_server_is_killed() {
    let etcd = TestEtcd::start().expect("etcd");
    let store = store_flag(&etcd.endpoint);
    let tmp = Cleanup(tempfile::tempdir().unwrap());
    let root = tmp.0.path();
    let mut a = Server::start(&root.join("a"), &store, &FAST_ELECTION);
    let on_a = Client::new(&admin_at(&a, &a)).unwrap();
    wait_lease(
        &on_a,
        "kumo-scheduler",
        &a.identity(),
        Duration::from_secs(10),
    )
    .await;
    let token = a.data().join("server-token");
    let mut flags = FAST_ELECTION.to_vec();
    flags.extend(["--server-token-file", token.to_str().unwrap()]);
    let b = Server::start(&root.join("b"), &store, &flags);
    let config_b = admin_at(&a, &b);
    let on_b = Client::new(&config_b).unwrap();
    // The agent talks to the server that will survive.
    let _agent = Killed(agent(&b, &config_b, root));
    let mut team = Namespace {
        metadata: ObjectMeta::named(None, "team"),
        ..Default::default()
    };
    team.metadata.labels.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "privileged".into(),
    );
    on_b.create(&team).await.expect("namespace team");
    wait_node_ready(&on_b, "n1").await;
    let bindings = record_bindings(&on_b, "team").await;
    create_pod(&on_b, "team", "before").await;
    wait_pod(&on_b, "team", "before", Duration::from_secs(30), |p| {
        p.spec.node_name.is_some()
    })
    .await;
    // An MLTask admitted by the first server's controller.
    let patch = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "privileged"}}});
    on_b.patch::<Namespace>("", "default", &patch)
        .await
        .expect("label default");
    submit(&config_b, root, "train-before");
    wait_admitted(&on_b, "train-before").await;
    // The controller records the event after the status: wait for it, so that a second
    // admission could not hide behind a first event never written.
    let deadline = Instant::now() + Duration::from_secs(20);
    while admitted_events(&on_b, "train-before").await != 1 {
        assert!(
            Instant::now() < deadline,
            "no Admitted event for train-before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pod of an admitted task is made by a later pass: wait for it before taking note.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pods_before = loop {
        let uids = task_pod_uids(&on_b, "train-before").await;
        if !uids.is_empty() {
            break uids;
        }
        assert!(Instant::now() < deadline, "no pod for train-before");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let admitted_at = admitted_since(&on_b, "train-before").await;

    // The scheduler's server dies; the other takes the lease within the lease time (3 s after
    // the last renewal it saw, which is at most one retry period old; plus one retry period to
    // notice, and a margin for a loaded machine and the test's polling).
    a.kill9();
    let took = wait_lease(
        &on_b,
        "kumo-scheduler",
        &b.identity(),
        Duration::from_secs(15),
    )
    .await;
    assert!(
        took < Duration::from_millis(3_000 + 2 * 500 + 2_000),
        "took {took:?}"
    );
    create_pod(&on_b, "team", "after").await;
    let pod = wait_pod(&on_b, "team", "after", Duration::from_secs(20), |p| {
        p.spec.node_name.is_some()
    })
    .await;
    assert_eq!(pod.spec.node_name.as_deref(), Some("n1"));
    // The second server's MLTask controller admits a new task, and has not admitted the first
    // one again: one Admitted event, the same pods.
    wait_lease(
        &on_b,
        "kumo-mltask-controller",
        &b.identity(),
        Duration::from_secs(15),
    )
    .await;
    submit(&config_b, root, "train-after");
    wait_admitted(&on_b, "train-after").await;
    assert_eq!(admitted_events(&on_b, "train-before").await, 1);
    assert_eq!(task_pod_uids(&on_b, "train-before").await, pods_before);
    assert_eq!(admitted_since(&on_b, "train-before").await, admitted_at);
    // Every pod bound once: no node name ever replaced by another.
    let seen = bindings.lock().unwrap().clone();
    for pod in ["before", "after"] {
        let nodes: Vec<&String> = seen[pod].iter().filter(|n| !n.is_empty()).collect();
        assert_eq!(nodes, ["n1"], "{pod}: {seen:?}");
        assert_eq!(seen[pod].last().map(String::as_str), Some("n1"), "{seen:?}");
    }
}

/// `kumo submit NAME` (a process task that runs until killed) through `config`.
fn submit(config: &ClientConfig, dir: &Path, name: &str) {
    cli(
        config,
        dir,
        &[
            "submit",
            name,
            "--runtime",
            "process",
            "-d",
            "--",
            "/bin/sh",
            "-c",
            "exec sleep 1000",
        ],
    );
}

/// Waits (bounded) until the MLTask `name` in `default` is admitted (or already running).
async fn wait_admitted(client: &Client, name: &str) {
    use kumo_api::mltask::{MLTask, TaskPhase};
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let task = client.get::<MLTask>("default", name).await.ok();
        let phase = task
            .as_ref()
            .and_then(|t| t.status.as_ref())
            .map(|s| s.phase);
        if matches!(phase, Some(TaskPhase::Admitted | TaskPhase::Running)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mltask {name} not admitted: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times an `Admitted` event was recorded about the MLTask `name`.
async fn admitted_events(client: &Client, name: &str) -> i32 {
    client
        .list::<kumo_api::Event>(Some("default"), &ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.involved_object.kind == "MLTask" && e.involved_object.name == name)
        .filter(|e| e.reason == "Admitted")
        .map(|e| e.count.max(1))
        .sum()
}

/// When the MLTask `name`'s Admitted condition last changed.
async fn admitted_since(client: &Client, name: &str) -> Option<kumo_api::Time> {
    let task: kumo_api::mltask::MLTask = client.get("default", name).await.unwrap();
    let status = task.status?;
    kumo_api::meta::find_condition(&status.conditions, "Admitted")?.last_transition_time
}

/// The uids of the MLTask `name`'s pods, sorted.
async fn task_pod_uids(client: &Client, name: &str) -> Vec<String> {
    let mut uids: Vec<String> = client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/mltask={name}")),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    uids.sort();
    uids
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP relay to etcd that can be cut without closing anything: bytes stop flowing both
/// ways and new connections are accepted but never answered, as in a network partition.
struct Partition {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    async fn to(upstream: &str) -> Partition {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (r1, w1) = conn.into_split();
                let (r2, w2) = up.into_split();
                tokio::spawn(relay(r1, w2, watch.clone()));
                tokio::spawn(relay(r2, w1, watch.clone()));
            }
        });
        Partition { port, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

/// Copies `from` to `to` until either closes; once cut, holds both open and drops what comes.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *cut.borrow() {
            // Keep reading (so the sender never sees an error) and forward nothing.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The time of the first line of `log` that contains every one of `words`.
fn logged_at(log: &str, words: &[&str]) -> Option<chrono::DateTime<chrono::Utc>> {
    log.lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_before_another_takes_over() {
    let etcd = TestEtcd::start().expect("etcd");
    let partition = Partition::to(&etcd.endpoint).await;
    let tmp = Cleanup(tempfile::tempdir().unwrap());
    let root = tmp.0.path();
    // The first server reaches etcd only through the relay; the second directly.
    let a = Server::start(
        &root.join("a"),
        &format!("etcd://127.0.0.1:{}", partition.port),
        &FAST_ELECTION,
    );
    let on_a = Client::new(&admin_at(&a, &a)).unwrap();
    wait_lease(
        &on_a,
        "kumo-scheduler",
        &a.identity(),
        Duration::from_secs(10),
    )
    .await;
    let token = a.data().join("server-token");
    let mut flags = FAST_ELECTION.to_vec();
    flags.extend(["--server-token-file", token.to_str().unwrap()]);
    let b = Server::start(&root.join("b"), &store_flag(&etcd.endpoint), &flags);
    let on_b = Client::new(&admin_at(&a, &b)).unwrap();
    let before: Lease = on_b.get("kumo-system", "kumo-scheduler").await.unwrap();
    assert!(before
        .spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| h.ends_with(&a.identity())));

    partition.cut();
    let cut = chrono::Utc::now();
    wait_lease(
        &on_b,
        "kumo-scheduler",
        &b.identity(),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        process_alive(a.pid()),
        "the cut-off server is still running"
    );
    let after: Lease = on_b.get("kumo-system", "kumo-scheduler").await.unwrap();
    assert_eq!(
        after.spec.lease_transitions,
        before.spec.lease_transitions.map(|t| t + 1),
        "{after:?}"
    );
    // The old leader gave up (its renew deadline passed) before the new one acquired.
    let lease = "lease=kumo-system/kumo-scheduler";
    let (a_log, b_log) = (a.log(), b.log());
    let stopped = logged_at(&a_log, &["lost leadership; stopped the loop", lease])
        .unwrap_or_else(|| panic!("the cut-off leader never stopped:\n{a_log}"));
    let started = logged_at(&b_log, &["became leader", lease])
        .unwrap_or_else(|| panic!("no new leader logged:\n{b_log}"));
    assert!(stopped > cut, "{stopped} {cut}");
    assert!(
        stopped < started,
        "the old leader stopped at {stopped}, after the new one started at {started}"
    );
    let acquired = after.spec.acquire_time.expect("acquireTime");
    assert!(stopped < acquired, "stopped {stopped}, acquired {acquired}");
    assert!(a_log.contains("renew deadline passed"), "{a_log}");
}
