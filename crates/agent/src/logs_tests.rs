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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    server_with(policy, None).await
}

async fn server_with(policy: RestartPolicy, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
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
        stop,
        exec_helper: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Plain HTTP, every request counting as authenticated: what the agent's TLS handshake
    // settles (see `the_endpoint_takes_only_client_certificates_of_the_cluster_ca`).
    let authenticate: kumo_serve::Authenticate = Arc::new(|_| true);
    tokio::spawn(kumo_serve::serve(
        listener,
        router(svc),
        LIMITS,
        authenticate,
        tls,
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
    async fn send(addr: std::net::SocketAddr, path: &str) -> Self {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes())
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

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    Exchange::send(addr, path).await.finish().await
}

#[tokio::test]
async fn names_what_is_missing() {
    let s = server(RestartPolicy::Never).await;
    let (code, body) = get(s.addr, "/containerLogs/default/nope/c").await;
    let status: Status = serde_json::from_str(&body).expect("status json");
    assert_eq!(
        (code, status.code, status.message.as_str()),
        (404, 404, "pods \"nope\" not found")
    );
    let (code, body) = get(s.addr, "/containerLogs/default/p/x").await;
    assert_eq!(code, 404);
    assert!(
        body.contains("container \\\"x\\\" is not valid for pod \\\"p\\\""),
        "{body}"
    );
    let (code, _) = get(s.addr, "/containerLogs/default/p/c?tailLines=-1").await;
    assert_eq!(code, 400);
    let (code, body) = get(s.addr, "/containerLogs/default/p/c").await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn serves_the_current_log_and_its_tail() {
    let s = server(RestartPolicy::Never).await;
    s.set(&[("c", running(0, 0))]);
    s.append("c-0.log", "one\ntwo\nthree\n");
    let (code, body) = get(s.addr, "/containerLogs/default/p/c").await;
    assert_eq!((code, body.as_str()), (200, "one\ntwo\nthree\n"));
    let (_, body) = get(s.addr, "/containerLogs/default/p/c?tailLines=2").await;
    assert_eq!(body, "two\nthree\n");
}

#[tokio::test]
async fn follow_streams_until_the_container_is_done_for_good() {
    let s = server(RestartPolicy::Never).await;
    s.set(&[("c", running(0, 0))]);
    s.append("c-0.log", "first\n");
    let mut req = Exchange::send(s.addr, "/containerLogs/default/p/c?follow=true").await;
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
    let mut req = Exchange::send(s.addr, "/containerLogs/default/p/c?follow=1&tailLines=5").await;
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
    let mut req = Exchange::send(s.addr, "/containerLogs/default/p/c?follow=true").await;
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
async fn beyond_the_cap_silent_connections_are_closed_and_requests_are_served() {
    let s = server(RestartPolicy::Never).await;
    s.append("c-0.log", "hello\n");
    s.set(&[("c", running(0, 1))]);
    // The API server's connection, kept alive after a request: it does not count.
    let mut api = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let request = "GET /containerLogs/default/p/c HTTP/1.1\r\nHost: agent\r\n\r\n";
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
    // cap: it sends its request at once.
    let mut api = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let answer = answer(&mut api, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("hello"),
        "{answer}"
    );
}

/// `GET path` over TLS trusting `ca_pem`, as `identity` when given, with `extra` headers; the
/// status and body, or why there was none.
async fn get_over_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&kumo_pki::Issued>,
    extra: &str,
) -> Result<(u16, String), String> {
    let config = kumo_pki::client_config(
        ca_pem,
        identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
    )
    .expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("node-a").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET /containerLogs/default/p/c HTTP/1.0\r\nHost: agent\r\n{extra}\r\n");
    // Under TLS 1.3 the server judges the client's certificate after the client's side of the
    // handshake is done: a refusal shows on the first read.
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut got))
        .await
        .expect("in time")
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no answer: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
}

#[tokio::test]
async fn the_endpoint_takes_only_client_certificates_of_the_cluster_ca() {
    let day = Duration::from_secs(24 * 3600);
    let ca = kumo_pki::Ca::generate().expect("ca");
    let other = kumo_pki::Ca::generate().expect("ca");
    let leaf = ca.issue_server(&["node-a".into()], day).expect("leaf");
    let tls = kumo_pki::server_config(&leaf.cert_pem, &leaf.key_pem, Some(ca.cert_pem()))
        .expect("server config");
    let s = server_with(RestartPolicy::Never, Some(tls)).await;
    s.append("c-0.log", "hello\n");
    s.set(&[("c", running(0, 0))]);

    let apiserver = ca
        .issue_client("kumo-apiserver", &["system:masters"], day)
        .expect("client");
    assert_eq!(
        get_over_tls(s.addr, ca.cert_pem(), Some(&apiserver), "").await,
        Ok((200, "hello\n".to_string()))
    );
    let stranger = other
        .issue_client("kumo-apiserver", &["system:masters"], day)
        .expect("client");
    let not_a_client = ca.issue_server(&["node-b".into()], day).expect("server");
    let cases = [
        ("no certificate", None, ""),
        (
            "a user's bearer token",
            None,
            "Authorization: Bearer admin-token\r\n",
        ),
        ("another CA's client certificate", Some(&stranger), ""),
        (
            "a server certificate of the cluster CA",
            Some(&not_a_client),
            "",
        ),
    ];
    for (what, identity, extra) in cases {
        let got = get_over_tls(s.addr, ca.cert_pem(), identity, extra).await;
        assert!(got.is_err(), "{what}: {got:?}");
    }
    // Plain HTTP gets no answer either.
    let (code, _) = tokio::time::timeout(Duration::from_secs(20), async {
        let mut plain = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        let _ = plain
            .write_all(b"GET /containerLogs/default/p/c HTTP/1.0\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = plain.read_to_end(&mut got).await;
        (got.starts_with(b"HTTP/"), got)
    })
    .await
    .expect("closed in time");
    assert!(!code);
}
