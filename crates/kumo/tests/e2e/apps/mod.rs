//! Apps end to end: releases, blue-green rollouts and the router in front of process-runtime
//! replicas (a small python3 HTTP server that names its replica and its config).

mod drain;
mod input;
mod limits;
mod resilience;
mod rollout;
mod routing;

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

/// Waits until the router answers `host` with a 200 whose body passes `pred` (it follows the
/// API through watches, a moment behind it).
async fn answers(router: SocketAddr, host: &str, pred: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (code, body) = get(router, host, "/").await.expect("request");
        if code == 200 && pred(&body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names of an app's ready replicas.
async fn ready_names(client: &Client, app: &str) -> std::collections::BTreeSet<String> {
    web_pods(client, app)
        .await
        .into_iter()
        .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name)
        .collect()
}

/// Sends requests until every one of `names` has answered (the router follows the API through
/// watches, so it may take a moment to route to replicas the API already shows ready).
pub async fn reaches_all(
    router: SocketAddr,
    host: &str,
    names: &std::collections::BTreeSet<String>,
) {
    let deadline = tokio::time::Instant::now() + T;
    let mut seen = std::collections::BTreeSet::new();
    let mut last = String::new();
    while !names.is_subset(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host}: only {seen:?} of {names:?} answered; last: {last}"
        );
        let (code, body) = get(router, host, "/").await.expect("request");
        if code == 200 {
            seen.insert(
                body.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        last = format!("{code} {body}");
    }
}

pub async fn web_pods(client: &Client, app: &str) -> Vec<Pod> {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/app={app}")),
        )
        .await
        .expect("list pods")
        .items
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

/// A `kumo router` process, killed when dropped.
struct RouterProcess(std::process::Child);

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
