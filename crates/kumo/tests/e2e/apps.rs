//! Apps end to end: releases, blue-green rollouts and the router in front of process-runtime
//! replicas (a small python3 HTTP server that names its replica and its config).

use crate::harness::*;
use kumo_api::app::{App, Release};
use kumo_api::Pod;
use kumo_client::{Client, ListParams};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

/// Answers every GET with `HOSTNAME V`; `/healthz` fails while `UNHEALTHY` is set.
const SERVER: &str = r#"
import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        bad = self.path == "/healthz" and os.environ.get("UNHEALTHY")
        body = ("%s %s\n" % (os.environ["HOSTNAME"], os.environ.get("V", ""))).encode()
        self.send_response(503 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
server = http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H)
print("listening on", os.environ["PORT"], flush=True)
server.serve_forever()
"#;

/// A process-runtime app manifest serving `SERVER` on `NAME.test`.
pub fn app_manifest(name: &str, replicas: i32, v: &str) -> String {
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "process",
            "processes": {"web": {"command": ["python3", "-c", SERVER], "replicas": replicas}},
            "env": {"V": v},
            "healthcheck": {"path": "/healthz", "timeoutSeconds": 1},
            "domains": [format!("{name}.test")],
            "deploy": {"drainSeconds": 2, "timeoutSeconds": 60}
        }
    });
    serde_json::to_string_pretty(&app).unwrap()
}

/// `kumo up` with a router; returns the cluster and the router's address.
pub fn cluster_with_router() -> (Cluster, SocketAddr) {
    let c = Cluster::up(&["--router-listen", "127.0.0.1:0"]);
    let addr = c
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("kumo: router listening on "))
        .expect("kumo up printed the router's address")
        .trim()
        .parse()
        .expect("router address");
    (c, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_http2_over_tls_with_a_self_signed_certificate() {
    let c = Cluster::up(&[
        "--router-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--self-signed",
    ]);
    let tls: SocketAddr = c
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("kumo: router listening for TLS on "))
        .expect("kumo up printed the TLS address")
        .trim()
        .parse()
        .unwrap();
    let client = c.client();
    apply(&c, "secure", &app_manifest("secure", 1, "s"));
    wait_app(&client, "secure", "v1 serving", serving(1, 1)).await;
    let port = tls.port().to_string();
    let resolve = format!("secure.test:{port}:127.0.0.1");
    let url = format!("https://secure.test:{port}/");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "--http2",
                "--resolve",
                &resolve,
                "-w",
                " %{http_version}",
                &url,
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.starts_with("secure-v1-web-") {
            assert!(text.ends_with(" s\n 2"), "HTTP/2 over TLS: {text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn apply(c: &Cluster, name: &str, manifest: &str) {
    let f = c.write(&format!("{name}.json"), manifest);
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `pred` holds for the app, polling its status; panics with the last seen.
pub async fn wait_app(client: &Client, name: &str, what: &str, pred: impl Fn(&App) -> bool) -> App {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let app: App = client.get("default", name).await.expect("get app");
        if pred(&app) {
            return app;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "app {name} did not get {what} within {T:?}: {:#?}",
                app.status
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The app serves release `v` with `n` ready web replicas.
pub fn serving(v: i64, n: i32) -> impl Fn(&App) -> bool {
    move |a: &App| {
        a.status.as_ref().is_some_and(|s| {
            s.active_release == Some(v) && s.ready.get("web") == Some(&n) && s.draining.is_none()
        })
    }
}

/// One HTTP/1.1 request through the router: (status, body).
pub async fn get(router: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(router).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Replica names seen in `n` requests.
async fn replicas_seen(
    router: SocketAddr,
    host: &str,
    n: usize,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (code, body) = get(router, host, "/").await.expect("request");
        assert_eq!(code, 200, "{body}");
        seen.insert(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    seen
}

async fn web_pods(client: &Client, app: &str) -> Vec<Pod> {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/app={app}")),
        )
        .await
        .expect("list pods")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_the_router_over_http1_and_h2c() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    apply(&c, "hello", &app_manifest("hello", 3, "1"));
    ok(&c.kumo(&[
        "wait",
        "app/hello",
        "--for=condition=Available",
        "--timeout",
        "60s",
    ]));
    let app = wait_app(&client, "hello", "3 ready replicas", serving(1, 3)).await;
    assert_eq!(app.status.unwrap().phase.as_deref(), Some("Running"));
    let releases = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap();
    assert_eq!(releases.items.len(), 1);
    assert_eq!(releases.items[0].metadata.name, "hello-v1");

    // Each replica got its own host port, and requests reach all three.
    let pods = web_pods(&client, "hello").await;
    let names: std::collections::BTreeSet<String> =
        pods.iter().map(|p| p.metadata.name.clone()).collect();
    let ports: std::collections::BTreeSet<&String> = pods
        .iter()
        .filter_map(|p| p.metadata.annotations.get("kumo.dev/assigned-port"))
        .collect();
    assert_eq!(ports.len(), 3, "{pods:#?}");
    assert_eq!(replicas_seen(router, "hello.test", 60).await, names);

    // One HTTP/2 connection: its requests spread over the replicas too.
    let stream = tokio::net::TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let req = http::Request::get("http://hello.test/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.expect("h2 request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        seen.insert(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(seen, names, "one h2 connection reached every replica");

    // An unknown host is 404; an app with no ready replica is 503 with a body saying so.
    let (code, _) = get(router, "nobody.test", "/").await.unwrap();
    assert_eq!(code, 404);
    apply(&c, "idle", &app_manifest("idle", 0, "1"));
    wait_app(&client, "idle", "an active release", serving(1, 0)).await;
    let (code, body) = get(router, "idle.test", "/").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("idle"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_and_deleted_replicas_are_replaced() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    apply(&c, "crash", &app_manifest("crash", 2, "1"));
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
    let seen = replicas_seen(router, "crash.test", 40).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

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

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `kumo logs -f TARGET` in the background: the process (killed when dropped) and its lines.
fn follow_logs(c: &Cluster, target: &str) -> (RouterProcess, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(kumo_exe())
        .args(["logs", target, "-f"])
        .env("KUMO_CONFIG", c.config_path())
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kumo logs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (RouterProcess(child), rx)
}

/// Requests one after another through the router until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(u16, String)>>,
}

impl Load {
    fn start(router: SocketAddr, host: &'static str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match get(router, host, "/").await {
                    Ok(r) => seen.push(r),
                    Err(e) => seen.push((0, e.to_string())),
                }
            }
            seen
        });
        Load { stop, task }
    }

    /// Every (status, body) seen, in order.
    async fn stop(self) -> Vec<(u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The config version (`V`) each answer named, in order; panics on any failed request.
fn versions(load: &[(u16, String)]) -> Vec<String> {
    for (code, body) in load {
        assert_eq!(*code, 200, "a request failed during the rollout: {body}");
    }
    let mut seq: Vec<String> = load
        .iter()
        .map(|(_, b)| b.split_whitespace().nth(1).unwrap_or_default().to_string())
        .collect();
    seq.dedup();
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_config_changes_abandon_rollback_and_one_off_runs() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    apply(&c, "web", &app_manifest("web", 2, "1"));
    wait_app(&client, "web", "v1 serving", serving(1, 2)).await;

    // Constant load while the config changes: no request fails, and the answers go from the
    // old config to the new one, never back.
    let (follower, lines) = follow_logs(&c, "app/web");
    let load = Load::start(router, "web.test");
    let out = ok(&c.kumo(&["config", "set", "web", "V=2"]));
    assert!(out.contains("Set V: release v2 of app web"), "{out}");
    wait_app(&client, "web", "v2 serving", serving(2, 2)).await;
    // A few more answers from v2 alone, then stop.
    let (code, body) = get(router, "web.test", "/").await.unwrap();
    assert_eq!((code, body.split_whitespace().nth(1)), (200, Some("2")));
    let load = load.stop().await;
    assert!(load.len() > 10, "the load ran: {}", load.len());
    assert_eq!(versions(&load), vec!["1", "2"]);
    // `kumo logs app/web -f` showed the old replicas and picked up the new ones.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + T;
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("log lines from every replica");
        if let Some((pod, text)) = line.split_once("| ") {
            if text.starts_with("listening on") {
                seen.insert(pod.to_string());
            }
        }
    }
    assert_eq!(
        seen.iter().filter(|p| p.starts_with("web-v2-web-")).count(),
        2,
        "{seen:?}"
    );
    drop(follower);

    // A release that never gets ready is abandoned; v2 keeps serving throughout. (A shorter
    // deadline for it: the deploy policy is not part of a release.)
    let patch = serde_json::json!({"spec": {"deploy": {"timeoutSeconds": 6}}});
    client.patch::<App>("default", "web", &patch).await.unwrap();
    let out = ok(&c.kumo(&["config", "set", "web", "UNHEALTHY=1"]));
    assert!(out.contains("release v3"), "{out}");
    let app = wait_app(&client, "web", "v3 abandoned", |a| {
        a.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Abandoned")
    })
    .await;
    let status = app.status.unwrap();
    assert_eq!(status.active_release, Some(2));
    assert!(status.message.unwrap().contains("release v3 abandoned"));
    let (code, body) = get(router, "web.test", "/").await.unwrap();
    assert_eq!((code, body.split_whitespace().nth(1)), (200, Some("2")));
    let releases = ok(&c.kumo(&["releases", "web"]));
    assert!(releases.contains("Abandoned"), "{releases}");
    assert!(releases.contains("Set UNHEALTHY"), "{releases}");
    let described = ok(&c.kumo(&["describe", "app", "web"]));
    assert!(described.contains("ReleaseAbandoned"), "{described}");
    assert!(described.contains("Traffic switched to v2"), "{described}");

    let patch = serde_json::json!({"spec": {"deploy": {"timeoutSeconds": 60}}});
    client.patch::<App>("default", "web", &patch).await.unwrap();

    // Rolling back to an unknown release changes nothing.
    let bad = c.kumo(&["rollback", "web", "v9"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("app web has no release v9"), "{err}");
    let count = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 3);

    // Rollback restores the config of v1 (UNHEALTHY gone, V=1), as release v4.
    let out = ok(&c.kumo(&["rollback", "web", "v1"]));
    assert!(out.contains("Rollback to v1: release v4"), "{out}");
    assert!(out.contains("v4 is serving"), "{out}");
    let app: App = client.get("default", "web").await.unwrap();
    assert_eq!(app.spec.env.get("V").map(String::as_str), Some("1"));
    assert!(!app.spec.env.contains_key("UNHEALTHY"));
    let (code, body) = get(router, "web.test", "/").await.unwrap();
    assert_eq!((code, body.split_whitespace().nth(1)), (200, Some("1")));
    let config = ok(&c.kumo(&["config", "web"]));
    assert_eq!(config, "V=1\n");

    // Scaling is not a release.
    ok(&c.kumo(&["scale", "web", "web=3"]));
    wait_app(&client, "web", "3 replicas of v4", serving(4, 3)).await;
    let count = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 4);
    let bad = c.kumo(&["scale", "web", "db=1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("app web has no process \"db\""));

    // A one-off run in the current release's config returns its exit code.
    let run = c.kumo(&["run", "web", "--", "/bin/sh", "-c", "echo hi $V; exit 3"]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi 1\n");
    let run = c.kumo(&["run", "web", "--", "/bin/true"]);
    assert_eq!(run.status.code(), Some(0));

    // The listing verbs.
    let apps = ok(&c.kumo(&["apps"]));
    assert!(
        apps.contains("web") && apps.contains("v4") && apps.contains("3/3"),
        "{apps}"
    );
    assert_eq!(ok(&c.kumo(&["open", "web"])), "http://web.test/\n");
    let logs = ok(&c.kumo(&["logs", "app/web", "--process", "web"]));
    assert_eq!(logs.matches("listening on").count(), 3, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_apps_are_refused_naming_the_field() {
    let c = Cluster::up(&[]);
    let base = |spec: serde_json::Value| {
        let mut app =
            serde_json::from_str::<serde_json::Value>(&app_manifest("bad", 1, "1")).unwrap();
        for (k, v) in spec.as_object().unwrap() {
            app["spec"][k] = v.clone();
        }
        app.to_string()
    };
    let cases = [
        (
            base(serde_json::json!({"processes": {"web": {}}})),
            "spec.processes.web.command: Required value",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "replicas": -1}}})),
            "spec.processes.web.replicas: Invalid value: -1",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "port": 70000}}})),
            "spec.processes.web.port: Invalid value: 70000",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "protocol": "h3"}}})),
            "spec.processes.web.protocol: unknown variant `h3`",
        ),
        (
            base(serde_json::json!({"domains": ["Bad_Domain"]})),
            "spec.domains[0]: Invalid value: \"Bad_Domain\"",
        ),
    ];
    for (manifest, expected) in cases {
        let f = c.write("bad.json", &manifest);
        let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!out.status.success(), "{manifest}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // The API refuses it too (the CLI checks first), with a 422.
    let client = c.client();
    let mut app: App = serde_json::from_str(&app_manifest("bad", 1, "1")).unwrap();
    app.spec.processes.get_mut("web").unwrap().replicas = -1;
    let err = client.create(&app).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");

    // A domain belongs to one app: the second app naming it is refused, naming the first.
    apply(&c, "one", &app_manifest("one", 1, "1"));
    let mut two = serde_json::from_str::<serde_json::Value>(&app_manifest("two", 1, "1")).unwrap();
    two["spec"]["domains"] = serde_json::json!(["two.test", "one.test"]);
    let f = c.write("two.json", &two.to_string());
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.domains[1]: Duplicate value: \"one.test\": already routed to app default/one"
        ),
        "{err}"
    );
    let apps = client
        .list::<App>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items;
    let names: Vec<&str> = apps.iter().map(|a| a.metadata.name.as_str()).collect();
    assert_eq!(names, vec!["one"], "nothing half-applied");

    // `kumo app create` checks its flags the same way before sending anything.
    let out = c.kumo(&["app", "create", "x", "--runtime", "process"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.processes.web.command: Required value")
    );
    let out = c.kumo(&[
        "app",
        "create",
        "y",
        "--runtime",
        "process",
        "--domain",
        "y.test",
        "--command",
        "python3",
        "-m",
        "http.server",
    ]);
    ok(&out);
}

/// A `kumo router` process, killed when dropped.
struct RouterProcess(std::process::Child);

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_router_follows_the_api() {
    use std::io::BufRead;
    let c = Cluster::up(&[]);
    let bad = c.kumo(&[
        "router",
        "--server",
        &c.url,
        "--token",
        "wrong",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!bad.status.success(), "a wrong token is refused at start");
    let mut child = std::process::Command::new(kumo_exe())
        .args(["router", "--server", &c.url, "--token", &c.token])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kumo router");
    let stdout = child.stdout.take().unwrap();
    let guard = RouterProcess(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let router: SocketAddr = line
        .strip_prefix("kumo: router listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let line = lines.next().unwrap().unwrap();
    let metrics: SocketAddr = line
        .strip_prefix("kumo: router metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert_eq!(get(router, "solo.test", "/").await.unwrap().0, 404);
    apply(&c, "solo", &app_manifest("solo", 1, "7"));
    let client = c.client();
    wait_app(&client, "solo", "v1 serving", serving(1, 1)).await;
    // The route follows the watch: poll until it is in (no restart of the router).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (code, body) = get(router, "solo.test", "/").await.unwrap();
        if code == 200 {
            assert!(body.ends_with(" 7\n"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Prometheus metrics count the app's requests.
    let (code, text) = get(metrics, "metrics", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let counted = text
        .lines()
        .any(|l| l.starts_with("kumo_router_requests_total{") && l.contains("app=\"solo\""));
    assert!(counted, "{text}");
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_apps_run_under_runc_and_deploy_follows_the_rollout() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (v1, _) = registry.push_busybox("web:1").expect("push busybox");
    let (v2, _) = registry.push_busybox("web:2").expect("push busybox");
    let (c, router) = cluster_with_router();
    let client = c.client();
    let script = "mkdir -p /www && echo $HOSTNAME $V > /www/index.html && exec /bin/busybox httpd -f -p $PORT -h /www";
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "box"},
        "spec": {
            "image": v1,
            "processes": {"web": {"command": ["/bin/busybox", "sh", "-c", script], "replicas": 2, "port": 8080}},
            "env": {"V": "one"},
            "healthcheck": {"path": "/"},
            "domains": ["box.test"],
            "deploy": {"drainSeconds": 1, "timeoutSeconds": 30}
        }
    });
    apply(&c, "box", &app.to_string());
    wait_app(&client, "box", "v1 serving", serving(1, 2)).await;
    // Each replica on its own pod IP, PORT being the declared port.
    let pods = web_pods(&client, "box").await;
    for p in &pods {
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP");
        assert!(ip.starts_with("10."), "{ip}");
    }
    let names: std::collections::BTreeSet<String> =
        pods.iter().map(|p| p.metadata.name.clone()).collect();
    assert_eq!(replicas_seen(router, "box.test", 40).await, names);

    let out = ok(&c.kumo(&["deploy", "box", "--image", &v2]));
    assert!(
        out.contains(&format!("Deploy {v2}: release v2 of app box")),
        "{out}"
    );
    assert!(out.contains("v2 is serving"), "{out}");
    let (code, body) = get(router, "box.test", "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.starts_with("box-v2-web-"), "{body}");
    let releases = ok(&c.kumo(&["releases", "box"]));
    assert!(releases.contains(&format!("Deploy {v2}")), "{releases}");
}

/// A gRPC service without generated code (raw bytes): `Hello` answers the replica's name,
/// `Stream` three messages naming it.
const GRPC_SERVER: &str = r#"
import os, grpc
from concurrent import futures
name = os.environ["HOSTNAME"].encode()
def hello(request, context):
    return name
def stream(request, context):
    for i in range(3):
        yield name + b" %d" % i
handler = grpc.method_handlers_generic_handler("kumo.Echo", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("0.0.0.0:" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"#;

/// Through one channel: 30 unary calls (the replica names seen, one per line), then one
/// server-streaming call (its messages, one per line, after a `--` line).
const GRPC_CLIENT: &str = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.default_authority", "grpc.test")])
hello = channel.unary_unary("/kumo.Echo/Hello")
for name in sorted(set(hello(b"hi", timeout=10).decode() for _ in range(30))):
    print(name)
print("--")
for message in channel.unary_stream("/kumo.Echo/Stream")(b"hi", timeout=10):
    print(message.decode())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_one_channel_spread_over_replicas() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "grpc"},
        "spec": {
            "runtimeClassName": "process",
            "processes": {"web": {"command": ["/usr/bin/python3", "-c", GRPC_SERVER], "replicas": 3, "protocol": "h2c"}},
            "domains": ["grpc.test"]
        }
    });
    apply(&c, "grpc", &app.to_string());
    wait_app(&client, "grpc", "3 ready replicas", serving(1, 3)).await;
    let names: Vec<String> = web_pods(&client, "grpc")
        .await
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", GRPC_CLIENT, &router.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (unary, streamed) = text.split_once("--\n").expect("two parts");
    let mut seen: Vec<&str> = unary.lines().collect();
    seen.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want, "one channel's calls reached every replica");
    let messages: Vec<&str> = streamed.lines().collect();
    assert_eq!(messages.len(), 3, "{streamed}");
    let replica = messages[0].split(' ').next().unwrap();
    assert_eq!(
        messages,
        vec![
            format!("{replica} 0"),
            format!("{replica} 1"),
            format!("{replica} 2")
        ]
    );
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
            "--token",
            &c.token,
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
    apply(&c, "spread", &app_manifest("spread", 2, "1"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_and_scale_down_drain_without_failing_requests() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    let mut app: serde_json::Value = serde_json::from_str(&app_manifest("roll", 3, "1")).unwrap();
    app["spec"]["deploy"]["strategy"] = serde_json::json!("Rolling");
    apply(&c, "roll", &app.to_string());
    wait_app(&client, "roll", "v1 serving", serving(1, 3)).await;

    // One replica at a time; both versions serve meanwhile; no request fails.
    let load = Load::start(router, "roll.test");
    ok(&c.kumo(&["config", "set", "roll", "V=2"]));
    wait_app(&client, "roll", "v2 serving", serving(2, 3)).await;
    let deadline = tokio::time::Instant::now() + T;
    while web_pods(&client, "roll").await.len() > 3 {
        assert!(tokio::time::Instant::now() < deadline, "old replicas stay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.stop().await;
    let v = versions(&seen);
    assert_eq!(v.first().map(String::as_str), Some("1"), "{v:?}");
    assert_eq!(v.last().map(String::as_str), Some("2"), "{v:?}");

    // Scaling down drains the replicas it removes: still no failed request.
    let load = Load::start(router, "roll.test");
    ok(&c.kumo(&["scale", "roll", "web=1"]));
    let deadline = tokio::time::Instant::now() + T;
    while web_pods(&client, "roll").await.len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "not scaled down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.stop().await;
    assert_eq!(versions(&seen), vec!["2"]);
    wait_app(&client, "roll", "1 replica", serving(2, 1)).await;
}

fn spawn_agent(c: &Cluster, dir: &std::path::Path) -> RouterProcess {
    let child = std::process::Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &c.url,
            "--token",
            &c.token,
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
    let agent_dir = c.dir.path().join("agent-n1");
    let agent = spawn_agent(&c, &agent_dir);
    let mut child = std::process::Command::new(kumo_exe())
        .args([
            "router",
            "--server",
            &c.url,
            "--token",
            &c.token,
            "--listen",
            "127.0.0.1:0",
        ])
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
    apply(&c, "steady", &app_manifest("steady", 2, "1"));
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
