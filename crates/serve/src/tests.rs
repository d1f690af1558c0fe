//! The limits against a real listener, driven by raw TCP clients: what a slow, idle or
//! anonymous connection gets, and that authenticated clients and long responses go on.

use super::*;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const TOKEN: &str = "good";
/// How long a test waits for what it expects before it fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// `/hello` answers at once; `/slow` sends one chunk after `SLOW`, then ends.
const SLOW: Duration = Duration::from_millis(2500);

async fn start(limits: Limits) -> Server {
    start_with(limits, None).await
}

async fn start_with(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let router = axum::Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/slow",
            get(|| async {
                let chunks = futures_util::stream::once(async {
                    tokio::time::sleep(SLOW).await;
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(b"done"))
                });
                Body::from_stream(chunks)
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let authenticate: Authenticate = Arc::new(|headers: &http::HeaderMap| {
        headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            == Some(format!("Bearer {TOKEN}").as_bytes())
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        router,
        limits,
        authenticate,
        tls,
        async move {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop, task }
}

impl Server {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        timeout(PATIENCE, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Sends `GET path` (with the token when `token`) and reads the answer: the status line and the
/// body (the answers here are `Content-Length` or chunked with one chunk).
async fn get_on<S>(conn: &mut S, path: &str, token: Option<&str>) -> (String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = timeout(PATIENCE, async {
        loop {
            let n = conn.read(&mut buf).await.expect("the answer is read");
            assert!(n > 0, "the connection closed before the answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let status = head.lines().next().unwrap_or("").to_string();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                if body.len() >= len.trim().parse::<usize>().unwrap() {
                    return (status, body.to_string());
                }
            } else if body.ends_with("0\r\n\r\n") {
                let data = body.split("\r\n").nth(1).unwrap_or("").to_string();
                return (status, data);
            }
        }
    })
    .await;
    answer.expect("an answer in time")
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    timeout(PATIENCE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    started.elapsed()
}

fn limits(header_ms: u64, idle_ms: u64, max_anonymous: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_anonymous,
    }
}

#[tokio::test]
async fn a_connection_without_a_whole_head_in_time_is_closed() {
    let header = Duration::from_millis(400);
    let server = start(limits(400, 60_000, 100)).await;
    // What a slow client sends: nothing, a part of a head, a head a byte at a time.
    let cases: [(&str, &[&[u8]]); 3] = [
        ("nothing", &[]),
        ("half a head", &[b"GET /hello HTTP/1.1\r\nHost: x\r\n"]),
        (
            "a byte at a time",
            &[b"G", b"E", b"T", b" ", b"/", b"h", b"e", b"l"],
        ),
    ];
    for (what, pieces) in cases {
        let mut conn = server.connect().await;
        let started = Instant::now();
        let writer = async {
            for piece in pieces {
                if conn.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        writer.await;
        closed_after(&mut conn).await;
        let took = started.elapsed();
        assert!(
            took >= header,
            "{what}: closed after {took:?}, before the timeout"
        );
    }
    // A head sent in time is answered.
    let mut conn = server.connect().await;
    assert_eq!(
        get_on(&mut conn, "/hello", None).await,
        ("HTTP/1.1 200 OK".into(), "hi".into())
    );
    server.stop().await;
}

/// Sends `GET /hello` with `token` on a new connection; the status line, or `None` when the
/// connection closes without an answer.
async fn try_hello(server: &Server, token: Option<&str>) -> Option<String> {
    let mut conn = server.connect().await;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /hello HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    // A refused connection may be closed before the request is even written.
    let _ = conn.write_all(request.as_bytes()).await;
    let mut buf = [0u8; 1024];
    match timeout(PATIENCE, conn.read(&mut buf))
        .await
        .expect("an answer or a close in time")
    {
        Ok(n) if n > 0 => {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            Some(text.lines().next().unwrap_or("").to_string())
        }
        _ => None,
    }
}

#[tokio::test]
async fn anonymous_connections_beyond_the_cap_are_on_probation_then_refused() {
    let server = start(limits(60_000, 60_000, 2)).await;
    let ok = ("HTTP/1.1 200 OK".to_string(), "hi".to_string());
    // Authenticated before the cap fills: it no longer counts.
    let mut authed = server.connect().await;
    assert_eq!(get_on(&mut authed, "/hello", Some(TOKEN)).await, ok);
    let mut a1 = server.connect().await;
    let _a2 = server.connect().await;

    // The cap is reached. A new connection that says nothing is closed within the probation,
    // long before the minute-long header timeout.
    let mut silent = server.connect().await;
    let took = closed_after(&mut silent).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // One that authenticates at once is served, and stays served.
    let mut late = server.connect().await;
    assert_eq!(get_on(&mut late, "/hello", Some(TOKEN)).await, ok);
    assert_eq!(get_on(&mut late, "/hello", None).await, ok);
    // One without a valid token gets a 503 and is closed.
    let mut stranger = server.connect().await;
    let (status, body) = get_on(&mut stranger, "/hello", Some("bad")).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(body.contains("present a valid bearer token"), "{body}");
    closed_after(&mut stranger).await;

    // With as many again on probation, a new connection is refused at once: even a valid
    // token gets no answer.
    let mut p1 = server.connect().await;
    let mut p2 = server.connect().await;
    assert_eq!(try_hello(&server, Some(TOKEN)).await, None);
    // The authenticated connections go on.
    assert_eq!(get_on(&mut authed, "/hello", Some(TOKEN)).await, ok);
    assert_eq!(get_on(&mut late, "/hello", Some(TOKEN)).await, ok);
    // Once the probation ends, new connections are let in again.
    closed_after(&mut p1).await;
    closed_after(&mut p2).await;
    assert_eq!(
        try_hello(&server, Some(TOKEN)).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    // A wrong token leaves a connection anonymous; the right one frees its place.
    assert_eq!(get_on(&mut a1, "/hello", Some("bad")).await, ok);
    assert_eq!(get_on(&mut a1, "/hello", Some(TOKEN)).await, ok);
    let mut a3 = server.connect().await;
    assert_eq!(get_on(&mut a3, "/hello", None).await, ok);
    // A closed anonymous connection frees its place too (the server sees the close when it
    // reads, so a new anonymous connection is tried until it is served).
    drop(a3);
    let deadline = Instant::now() + PATIENCE;
    while try_hello(&server, None).await.as_deref() != Some("HTTP/1.1 200 OK") {
        assert!(
            Instant::now() < deadline,
            "the closed connection's place is never freed"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_long_response_is_not_cut() {
    let idle = Duration::from_millis(1000);
    let server = start(limits(200, 1000, 100)).await;
    let ok = ("HTTP/1.1 200 OK".to_string(), "hi".to_string());
    let mut conn = server.connect().await;
    assert_eq!(get_on(&mut conn, "/hello", Some(TOKEN)).await, ok);
    // Idle past the header timeout, but well within the idle one: still served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get_on(&mut conn, "/hello", Some(TOKEN)).await, ok);
    let took = closed_after(&mut conn).await;
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );

    // A response that takes longer than both timeouts is sent whole.
    let mut conn = server.connect().await;
    assert!(SLOW > idle * 2);
    assert_eq!(
        get_on(&mut conn, "/slow", Some(TOKEN)).await,
        ("HTTP/1.1 200 OK".into(), "done".into())
    );
    // Then the idle timer starts again.
    closed_after(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_returns_with_slow_and_idle_connections_open() {
    let server = start(limits(60_000, 60_000, 100)).await;
    let mut idle = server.connect().await;
    assert_eq!(
        get_on(&mut idle, "/hello", Some(TOKEN)).await.1,
        "hi".to_string()
    );
    let mut partial = server.connect().await;
    partial.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let mut silent = server.connect().await;
    server.stop().await;
    closed_after(&mut idle).await;
    closed_after(&mut silent).await;
    closed_after(&mut partial).await;
}

#[tokio::test]
async fn shutdown_lets_a_response_in_flight_finish() {
    let server = start(limits(60_000, 60_000, 100)).await;
    let mut conn = server.connect().await;
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The head is read once the response has started (the chunked head comes first).
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(PATIENCE, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let Server { stop, task, .. } = server;
    let _ = stop.send(());
    timeout(PATIENCE, async {
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the connection closes after its response");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("done") && text.ends_with("0\r\n\r\n"),
        "{text}"
    );
    timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
}

/// A TLS server with a certificate for 127.0.0.1 from a new CA; a client trusting that CA.
fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let ca = kumo_pki::Ca::generate().unwrap();
    let leaf = ca
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    let server = kumo_pki::server_config(&leaf.cert_pem, &leaf.key_pem, None).unwrap();
    let client = kumo_pki::client_config(ca.cert_pem(), None).unwrap();
    (server, tokio_rustls::TlsConnector::from(client))
}

#[tokio::test]
async fn over_tls_requests_are_served_and_plain_http_gets_no_answer() {
    let header = Duration::from_millis(500);
    let (tls, connector) = tls_pair();
    let server = start_with(limits(500, 60_000, 100), Some(tls)).await;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = connector
        .connect(name.clone(), server.connect().await)
        .await
        .unwrap();
    let ok = ("HTTP/1.1 200 OK".to_string(), "hi".to_string());
    assert_eq!(get_on(&mut conn, "/hello", Some(TOKEN)).await, ok);
    assert_eq!(get_on(&mut conn, "/hello", None).await, ok);

    // Plain HTTP: the connection closes and nothing that reads as HTTP comes back.
    let mut plain = server.connect().await;
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    timeout(PATIENCE, plain.read_to_end(&mut got))
        .await
        .expect("the plain connection is closed in time")
        .ok();
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // A client that never starts the handshake, and one that completes it but sends no
    // request, are both closed once the header timeout from their accept has passed.
    let started = Instant::now();
    let mut silent = server.connect().await;
    let took = closed_after(&mut silent).await;
    assert!(took >= header, "closed after {took:?}");
    assert!(started.elapsed() < PATIENCE);
    let started = Instant::now();
    let mut quiet = connector
        .connect(name, server.connect().await)
        .await
        .unwrap();
    closed_after(&mut quiet).await;
    let took = started.elapsed();
    assert!(took >= header, "closed after {took:?}");
    server.stop().await;
}
