//! The API's contract: authentication, validation with field paths, optimistic concurrency,
//! and node lifecycle, each checked through the real server.

use crate::harness::*;
use http::Method;
use kumo_api::meta::find_condition;
use kumo_api::{ConditionStatus, Namespace, Node, ObjectMeta, PodPhase};
use kumo_client::{Client, ClientConfig};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required() {
    let c = Cluster::up(&[]);
    let anonymous = Client::new(&ClientConfig {
        token: String::new(),
        ..c.client_config()
    })
    .unwrap();
    let wrong = Client::new(&ClientConfig {
        token: "not-the-token".into(),
        ..c.client_config()
    })
    .unwrap();
    for (client, message) in [
        (&anonymous, "missing bearer token"),
        (&wrong, "invalid bearer token"),
    ] {
        let err = client
            .list::<kumo_api::Pod>(Some("default"), &Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(401), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
    // Health and version are open.
    for path in ["/healthz", "/version"] {
        assert!(
            anonymous.send(Method::GET, path, None).await.is_ok(),
            "{path} must not need a token"
        );
    }
    let out = Command::new(kumo_exe())
        .args(["get", "pods"])
        .env("KUMO_CONFIG", c.config_path())
        .env("KUMO_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    // A secret is never taken from argv, where every local user could read it.
    let out = c.kumo(&["get", "pods", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--token is not accepted") && stderr(&out).contains("KUMO_TOKEN"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let cases: &[(&str, &str, &str)] = &[
        ("badyaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n", "badyaml.yaml"),
        ("unknownkind", "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n", "unknown kind \"Frobnicator\""),
        (
            "unknownfield",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n    colour: red\n",
            "spec.containers[0].colour: unknown field `colour`",
        ),
        (
            "badquantity",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n    resources: {limits: {memory: 12XB}}\n",
            "spec.containers[0].resources.limits.memory: invalid quantity \"12XB\"",
        ),
        ("noname", "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n", "metadata.name"),
        (
            "notdns",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Not_A_Label}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n",
            "metadata.name: Invalid value: \"Not_A_Label\"",
        ),
        (
            // The first document is fine, the second is not: neither may be applied.
            "halfbad",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  runtimeClassName: process\n  containers:\n  - name: c\n    command: [\"true\"]\n    resources: {limits: {cpu: lots}}\n",
            "spec.containers[0].resources.limits.cpu: invalid quantity \"lots\"",
        ),
    ];
    for (name, manifest, expected) in cases {
        let f = c.write(&format!("{name}.yaml"), manifest);
        let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!out.status.success(), "{name}: apply succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{name}: stderr lacks {expected:?}:\n{}",
            stderr(&out)
        );
    }
    let pods = client
        .list::<kumo_api::Pod>(None, &Default::default())
        .await
        .unwrap();
    assert!(
        pods.items.is_empty(),
        "bad input created pods: {:?}",
        pods.items
            .iter()
            .map(|p| &p.metadata.name)
            .collect::<Vec<_>>()
    );

    // The API itself answers 4xx with a Status naming the field.
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"memory": "12XB"}}}]}});
    let err = client
        .request_json::<serde_json::Value>(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(("application/json", &body)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(422));
    assert!(
        err.to_string()
            .contains("spec.containers[0].resources.limits.memory: invalid quantity \"12XB\""),
        "{err}"
    );
    let err = client
        .send(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(("application/json", b"{not json".to_vec())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(400), "{err}");
    let big = vec![b' '; 4 << 20];
    let err = client
        .send(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(("application/json", big)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(413), "{err}");
    let err = client
        .send(Method::GET, "/api/v1/frobnicators", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404), "{err}");
    let err = client
        .send(Method::GET, "/api/v1/namespaces/nowhere/pods/x", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404), "{err}");

    // CLI mistakes exit non-zero with a clear message.
    let out = c.kumo(&["get", "frobnicators"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("frobnicators"), "{}", stderr(&out));
    let out = c.kumo(&["get", "pod", "missing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pods \"missing\" not found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_without_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(kumo_exe())
        .args(["get", "pods", "--server", "http://127.0.0.1:1"])
        .env("HOME", dir.path())
        .env("KUMO_TOKEN", "t")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach kumo server at http://127.0.0.1:1: connection refused (is `kumo up` running?)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_no_update() {
    const CLIENTS: usize = 6;
    const EACH: usize = 15;
    let c = Cluster::up(&[]);
    let client = c.client();
    let ns = Namespace {
        metadata: ObjectMeta::named(None, "counter"),
        ..Default::default()
    };
    client.create(&ns).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                loop {
                    let mut ns: Namespace = client.get("", "counter").await.unwrap();
                    let n: usize = ns
                        .metadata
                        .annotations
                        .get("count")
                        .map_or(0, |v| v.parse().unwrap());
                    ns.metadata
                        .annotations
                        .insert("count".into(), (n + 1).to_string());
                    match client.update(&ns).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let ns: Namespace = client.get("", "counter").await.unwrap();
    assert_eq!(
        ns.metadata.annotations.get("count").map(String::as_str),
        Some((CLIENTS * EACH).to_string().as_str())
    );
    assert!(conflicts > 0, "the test raced nothing; it proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_becomes_not_ready_and_its_pods_are_marked() {
    let cp = Cluster::start_with(vec!["server".into(), "--node-grace".into(), "2s".into()]);
    // `kumo server` holds `default` to baseline: these pods run as host processes.
    cp.privileged_namespace("default");
    let agent_dir = cp.dir.path().join("agent");
    let mut agent = Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &cp.url,
            "--join",
            &cp.join_token(),
            "--ca-file",
            cp.ca_file().to_str().unwrap(),
            "--node-name",
            "n2",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--heartbeat-interval",
            "500ms",
            "--data-dir",
            agent_dir.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = cp.client();
    let f = cp.write(
        "sleeper.yaml",
        &process_pod("sleeper", "Always", "exec sleep 1000"),
    );
    assert!(cp
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    wait_pod(&client, "default", "sleeper", T, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Running)
    })
    .await;
    let node: Node = client.get("", "n2").await.unwrap();
    assert!(ready(&node) == Some(ConditionStatus::True));

    agent.kill().unwrap();
    agent.wait().unwrap();
    let p = wait_pod(&client, "default", "sleeper", T, |p| {
        p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("NodeLost")
    })
    .await;
    assert_eq!(p.status.as_ref().unwrap().phase, PodPhase::Unknown);
    let node: Node = client.get("", "n2").await.unwrap();
    assert_eq!(ready(&node), Some(ConditionStatus::Unknown));
    let get = cp.kumo(&["get", "nodes"]);
    assert!(
        String::from_utf8_lossy(&get.stdout).contains("NotReady"),
        "{}",
        String::from_utf8_lossy(&get.stdout)
    );
}

fn ready(node: &Node) -> Option<ConditionStatus> {
    node.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .map(|c| c.status)
}

/// Events expire after `--event-ttl`: a pod's Scheduled and Started events appear, then go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_their_ttl() {
    let c = Cluster::up(&["--event-ttl", "2s"]);
    let client = c.client();
    let f = c.write("p.yaml", &process_pod("short", "Never", "true"));
    let o = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_pod(&client, "default", "short", Duration::from_secs(30), |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Succeeded)
    })
    .await;
    let count = || async {
        client
            .list::<kumo_api::Event>(Some("default"), &kumo_client::ListParams::default())
            .await
            .expect("list events")
            .items
            .len()
    };
    assert!(count().await > 0, "the pod's events exist at first");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count().await, 0, "every event expired");
}
