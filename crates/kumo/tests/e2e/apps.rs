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
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
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
            "deploy": {"drainSeconds": 1, "timeoutSeconds": 15}
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
}
