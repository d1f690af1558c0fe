//! Tests of the log endpoint over real HTTP, with a fake runtime and a map of pods.

use super::*;
use crate::fixtures::{dead, exited, pod, running};
use crate::model::PodRuntimeState;
use kumo_api::RestartPolicy;
use kumo_runtime::record::PodRecord;
use kumo_runtime::RuntimeError;
use kumo_runtime::StartOutcome;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

#[derive(Default)]
struct Pods(Mutex<BTreeMap<String, Pod>>);

impl PodLookup for Pods {
    fn pod(&self, key: &str) -> Option<Pod> {
        self.0.lock().expect("lock").get(key).cloned()
    }
}

struct FakeRuntime {
    dir: PathBuf,
    state: Mutex<PodRuntimeState>,
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn start(&self, _: &Pod, _: usize) -> Result<StartOutcome, RuntimeError> {
        Err(RuntimeError::Shim("fake".into()))
    }
    async fn kill(&self, _: &str, _: &str, _: Duration) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn state(&self, uid: &str) -> PodRuntimeState {
        if uid == "uid-1" {
            self.state.lock().expect("lock").clone()
        } else {
            PodRuntimeState::default()
        }
    }
    fn pods(&self) -> Vec<PodRecord> {
        Vec::new()
    }
    fn log_path(&self, _: &str, container: &str, restart_count: i32) -> PathBuf {
        self.dir.join(format!("{container}-{restart_count}.log"))
    }
    async fn cleanup(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn shutdown(&self) {}
}

struct Server {
    addr: std::net::SocketAddr,
    pods: Arc<Pods>,
    rt: Arc<FakeRuntime>,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

impl Server {
    fn set(&self, states: &[(&str, ContainerRuntimeState)]) {
        *self.rt.state.lock().expect("lock") = crate::fixtures::actual(states);
    }

    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.rt.dir.join(file))
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }
}

/// The endpoint's limits in these tests: an idle timeout shorter than a followed log's pauses.
const LIMITS: kumo_serve::Limits = kumo_serve::Limits {
    header_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_millis(300),
    max_anonymous: 2,
};

async fn server(policy: RestartPolicy) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let pods = Arc::new(Pods::default());
    pods.0
        .lock()
        .expect("lock")
        .insert("default/p".into(), pod(policy, &["c"]));
    let rt = Arc::new(FakeRuntime {
        dir: dir.path().to_path_buf(),
        state: Mutex::default(),
    });
    let (stop_tx, stop) = watch::channel(false);
    let svc = Arc::new(LogService {
        pods: pods.clone(),
        runtime: rt.clone(),
        token: "sekret".into(),
        stop,
        exec_helper: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let authenticate: kumo_serve::Authenticate =
        Arc::new(|headers| crate::logs::authorized(headers, "sekret"));
    tokio::spawn(kumo_serve::serve(
        listener,
        router(svc),
        LIMITS,
        authenticate,
        std::future::pending(),
    ));
    Server {
        addr,
        pods,
        rt,
        _dir: dir,
        _stop: stop_tx,
    }
}

/// An HTTP/1.0 exchange (the body ends with the connection), read as it arrives.
struct Exchange {
    stream: tokio::net::TcpStream,
    received: Vec<u8>,
}

impl Exchange {
    async fn send(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Self {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n{auth}\r\n").as_bytes())
            .await
            .expect("write");
        Exchange {
            stream,
            received: Vec::new(),
        }
    }

    /// Reads until `needle` has arrived (or the response ended).
    async fn wait_for(&mut self, needle: &str) {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.received).contains(needle) {
            let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            if n == 0 {
                return;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }

    async fn finish(mut self) -> (u16, String) {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.stream.read_to_end(&mut self.received),
        )
        .await
        .expect("in time")
        .expect("read");
        let text = String::from_utf8_lossy(&self.received).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        (code, body.to_string())
    }
}

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    Exchange::send(addr, path, token).await.finish().await
}

#[tokio::test]
async fn refuses_without_the_token_and_names_what_is_missing() {
    let s = server(RestartPolicy::Never).await;
    assert_eq!(get(s.addr, "/containerLogs/default/p/c", None).await.0, 401);
    assert_eq!(
        get(s.addr, "/containerLogs/default/p/c", Some("wrong!"))
            .await
            .0,
        401
    );
    let (code, body) = get(s.addr, "/containerLogs/default/nope/c", Some("sekret")).await;
    let status: Status = serde_json::from_str(&body).expect("status json");
    assert_eq!(
        (code, status.code, status.message.as_str()),
        (404, 404, "pods \"nope\" not found")
    );
    let (code, body) = get(s.addr, "/containerLogs/default/p/x", Some("sekret")).await;
    assert_eq!(code, 404);
    assert!(
        body.contains("container \\\"x\\\" is not valid for pod \\\"p\\\""),
        "{body}"
    );
    let (code, _) = get(
        s.addr,
        "/containerLogs/default/p/c?tailLines=-1",
        Some("sekret"),
    )
    .await;
    assert_eq!(code, 400);
    let (code, body) = get(s.addr, "/containerLogs/default/p/c", Some("sekret")).await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn serves_the_current_log_and_its_tail() {
    let s = server(RestartPolicy::Never).await;
    s.set(&[("c", running(0, 0))]);
    s.append("c-0.log", "one\ntwo\nthree\n");
    let (code, body) = get(s.addr, "/containerLogs/default/p/c", Some("sekret")).await;
    assert_eq!((code, body.as_str()), (200, "one\ntwo\nthree\n"));
    let (_, body) = get(
        s.addr,
        "/containerLogs/default/p/c?tailLines=2",
        Some("sekret"),
    )
    .await;
    assert_eq!(body, "two\nthree\n");
}

#[tokio::test]
async fn follow_streams_until_the_container_is_done_for_good() {
    let s = server(RestartPolicy::Never).await;
    s.set(&[("c", running(0, 0))]);
    s.append("c-0.log", "first\n");
    let mut req = Exchange::send(
        s.addr,
        "/containerLogs/default/p/c?follow=true",
        Some("sekret"),
    )
    .await;
    req.wait_for("first\n").await;
    s.append("c-0.log", "second\n");
    req.wait_for("second\n").await;
    s.append("c-0.log", "third\n");
    s.set(&[("c", dead(0, exited(0, 0, 1)))]);
    let (code, body) = req.finish().await;
    assert_eq!((code, body.as_str()), (200, "first\nsecond\nthird\n"));
}

#[tokio::test]
async fn follow_crosses_restarts_and_ends_when_the_pod_is_deleted() {
    let s = server(RestartPolicy::Always).await;
    s.append("c-0.log", "run0\n");
    s.set(&[("c", dead(0, exited(1, 0, 1)))]);
    let mut req = Exchange::send(
        s.addr,
        "/containerLogs/default/p/c?follow=1&tailLines=5",
        Some("sekret"),
    )
    .await;
    req.wait_for("run0\n").await;
    s.append("c-1.log", "run1\n");
    s.set(&[("c", running(1, 2))]);
    // Deleting the pod means no more restarts: the stream drains and ends.
    s.pods
        .0
        .lock()
        .expect("lock")
        .get_mut("default/p")
        .expect("pod")
        .metadata
        .deletion_timestamp = Some(crate::fixtures::t(3));
    s.append("c-1.log", "bye\n");
    s.set(&[("c", dead(1, exited(143, 2, 3)))]);
    let (code, body) = req.finish().await;
    assert_eq!((code, body.as_str()), (200, "run0\nrun1\nbye\n"));
}

#[test]
fn query_parsing() {
    let q = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_log_request("ns".into(), "p".into(), "c".into(), &pairs)
    };
    assert_eq!(
        q(&[("follow", "true"), ("tailLines", "10"), ("timestamps", "x")]),
        Ok(AgentRequest::ContainerLogs {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
            follow: true,
            tail_lines: Some(10)
        })
    );
    assert!(q(&[("follow", "maybe")]).is_err());
    assert!(q(&[("tailLines", "ten")]).is_err());
    // Extreme numbers: the largest is a valid (if pointless) tail, the rest are errors naming
    // the parameter, never a wrapped value.
    let tail = |v: &str| match q(&[("tailLines", v)]) {
        Ok(AgentRequest::ContainerLogs { tail_lines, .. }) => Ok(tail_lines),
        Err(e) => Err(e),
    };
    assert_eq!(tail("9223372036854775807"), Ok(Some(i64::MAX as u64)));
    for bad in [
        "9223372036854775808",
        "18446744073709551616",
        "-1",
        "-9223372036854775808",
        "",
    ] {
        let e = tail(bad).unwrap_err();
        assert!(e.starts_with("tailLines: invalid value"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_followed_log_outlives_the_idle_timeout() {
    let s = server(RestartPolicy::Never).await;
    s.append("c-0.log", "first\n");
    s.set(&[("c", running(0, 1))]);
    let mut req = Exchange::send(
        s.addr,
        "/containerLogs/default/p/c?follow=true",
        Some("sekret"),
    )
    .await;
    req.wait_for("first\n").await;
    // Quiet for three times the idle timeout: a stream in flight is not idle.
    tokio::time::sleep(LIMITS.idle_timeout * 3).await;
    s.append("c-0.log", "second\n");
    req.wait_for("second\n").await;
    s.set(&[("c", dead(0, exited(0, 0, 1)))]);
    let (code, body) = req.finish().await;
    assert_eq!((code, body.as_str()), (200, "first\nsecond\n"));
}

#[tokio::test]
async fn beyond_the_cap_silent_connections_are_closed_and_the_token_is_served() {
    let s = server(RestartPolicy::Never).await;
    s.append("c-0.log", "hello\n");
    s.set(&[("c", running(0, 1))]);
    // The API server's connection, kept alive after a request with the token: it does not count.
    let mut api = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let request = "GET /containerLogs/default/p/c HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer sekret\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    // One chunked answer on the kept-alive connection, whole.
    async fn answer(api: &mut tokio::net::TcpStream, request: &str) -> String {
        api.write_all(request.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), api.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            assert!(n > 0, "closed before the answer ended");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    for _ in 0..2 {
        let answer = answer(&mut api, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("hello"),
            "{answer}"
        );
    }
    let _idle: Vec<_> = [
        tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect"),
        tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect"),
    ]
    .into();
    let mut refused = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(20), refused.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "a silent connection beyond the cap is closed");
    assert!(
        started.elapsed() < LIMITS.header_timeout,
        "closed within its probation, not by the header timeout"
    );
    // The API server's next connection (its kept one went idle meanwhile) is served at the
    // cap: it presents the token at once.
    let mut api = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let answer = answer(&mut api, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("hello"),
        "{answer}"
    );
}
