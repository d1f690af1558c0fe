//! What slow, anonymous or strange requests get: closed connections and 400s, never a stalled
//! server or a panic.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection; how long that took.
async fn closed_after(conn: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    started.elapsed()
}

/// `GET path` on a raw connection; the status line of the answer (read whole).
async fn status_on(conn: &mut TcpStream, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|l| l.trim().parse().unwrap())
                    .unwrap_or(0);
                if body.len() >= len {
                    return head.lines().next().unwrap().to_string();
                }
            }
        }
    })
    .await
    .expect("an answer in time")
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_head_is_closed() {
    let limits = kumo_serve::Limits {
        header_timeout: Duration::from_millis(300),
        ..kumo_serve::Limits::default()
    };
    let s = Server::with_limits(MemStore::new(), Duration::from_secs(5), limits).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_after(&mut conn).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    s.stop().await;
}

#[tokio::test]
async fn beyond_the_anonymous_cap_only_tokens_are_served() {
    let limits = kumo_serve::Limits {
        max_anonymous: 3,
        ..kumo_serve::Limits::default()
    };
    let s = Server::with_limits(MemStore::new(), Duration::from_secs(5), limits).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut agent = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        status_on(&mut agent, "/api/v1/nodes", Some(TOKEN)).await,
        "HTTP/1.1 200 OK"
    );
    // Three that connect and say nothing, and one whose request is refused: all anonymous.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut stranger = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        status_on(&mut stranger, "/api/v1/nodes", Some("wrong")).await,
        "HTTP/1.1 401 Unauthorized"
    );
    // At the cap: a new connection that says nothing is closed within its probation (the
    // header timeout is 30 s), one with a valid token is served.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let took = closed_after(&mut silent).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    let mut late = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        status_on(&mut late, "/api/v1/nodes", Some(TOKEN)).await,
        "HTTP/1.1 200 OK"
    );
    let mut no_token = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        status_on(&mut no_token, "/healthz", None).await,
        "HTTP/1.1 503 Service Unavailable"
    );
    // The authenticated connection, and the shared client's, go on.
    for _ in 0..3 {
        assert_eq!(
            status_on(&mut agent, "/api/v1/nodes", Some(TOKEN)).await,
            "HTTP/1.1 200 OK"
        );
        s.check(req("GET", "/api/v1/namespaces", None), 200, "default")
            .await;
    }
    // The stranger presents a valid token: its place is freed.
    assert_eq!(
        status_on(&mut stranger, "/api/v1/nodes", Some(TOKEN)).await,
        "HTTP/1.1 200 OK"
    );
    let mut next = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        status_on(&mut next, "/healthz", None).await,
        "HTTP/1.1 200 OK"
    );
    s.stop().await;
}

#[tokio::test]
async fn extreme_query_values_are_refused_with_400() {
    let s = Server::start().await;
    s.create(PODS, pod("p")).await;
    let seconds = "must be a whole number of seconds from 0 to 31536000";
    let cases = [
        (
            "GET",
            format!("{PODS}?watch=true&timeoutSeconds=9223372036854775807"),
            "timeoutSeconds: invalid value",
        ),
        (
            "GET",
            format!("{PODS}?watch=true&timeoutSeconds=18446744073709551616"),
            seconds,
        ),
        (
            "GET",
            format!("{PODS}?watch=true&timeoutSeconds=-1"),
            seconds,
        ),
        (
            "GET",
            format!("{PODS}?watch=true&timeoutSeconds=31536001"),
            seconds,
        ),
        (
            "GET",
            format!("{PODS}?watch=true&resourceVersion=18446744073709551616"),
            "resourceVersion: invalid value",
        ),
        ("GET", format!("{PODS}?limit=-1"), "limit: invalid value"),
        ("GET", format!("{PODS}?limit=1e99"), "limit: invalid value"),
        (
            "GET",
            format!("{PODS}/p/log?tailLines=-1"),
            "tailLines: invalid value",
        ),
        (
            "GET",
            format!("{PODS}/p/log?tailLines=99999999999999999999"),
            "tailLines: invalid value",
        ),
        (
            "DELETE",
            format!("{PODS}/p?gracePeriodSeconds=9223372036854775807"),
            "gracePeriodSeconds: invalid value",
        ),
        (
            "DELETE",
            format!("{PODS}/p?gracePeriodSeconds=-9223372036854775808"),
            seconds,
        ),
        (
            "GET",
            format!("{PODS}/p/log?sinceSeconds=9223372036854775807"),
            "sinceSeconds",
        ),
        ("GET", format!("{PODS}/p/log?limitBytes=-1"), "limitBytes"),
    ];
    for (method, path, message) in cases {
        s.check(req(method, &path, None), 400, message).await;
    }
    // Nothing changed, and the server still answers; a watch at the largest timeout runs.
    s.check(req("GET", &format!("{PODS}/p"), None), 200, "\"p\"")
        .await;
    let response = s
        .send(req(
            "GET",
            &format!("{PODS}?watch=true&timeoutSeconds=31536000"),
            None,
        ))
        .await;
    assert_eq!(response.status(), 200);
    // A huge resource version is a future one: the watch waits, it does not fail.
    let response = s
        .send(req(
            "GET",
            &format!("{PODS}?watch=true&resourceVersion=18446744073709551615"),
            None,
        ))
        .await;
    assert_eq!(response.status(), 200);
    s.stop().await;
}
