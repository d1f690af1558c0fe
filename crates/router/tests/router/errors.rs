//! What the router answers itself: 404, 503, 504, 400 — and that it keeps serving afterwards.

use std::time::Duration;

use http::StatusCode;
use kumo_router::BackendProtocol::Http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn unknown_host_is_404_naming_the_host() {
    let a = replica(Http1, "a").await;
    let r = router(vec![route("web", "web.test", Http1, &[&a])]).await;
    let reply = H1::new().get(r.addr(), "nope.test", "/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, "no route for host nope.test\n");
}

#[tokio::test]
async fn no_ready_endpoint_is_503_naming_the_app() {
    let old = replica(Http1, "old").await;
    let mut draining_only = route("web", "web.test", Http1, &[]);
    draining_only.draining = vec![old.endpoint()];
    let r = router(vec![
        draining_only,
        route("empty", "empty.test", Http1, &[]),
    ])
    .await;
    for (host, app) in [("web.test", "web"), ("empty.test", "empty")] {
        let reply = H1::new().get(r.addr(), host, "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.body, format!("no ready endpoint for app {app}\n"));
    }
    assert_eq!(old.hits(), 0);
}

#[tokio::test]
async fn a_slow_backend_is_504_after_the_route_timeout() {
    let slow = backend(Http1, "slow", |_req, _id| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let mut web = route("web", "web.test", Http1, &[&slow]);
    web.timeout = Duration::from_millis(200);
    let r = router(vec![web]).await;
    let reply = H1::new().get(r.addr(), "web.test", "/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        reply.body,
        "upstream timed out: app web did not answer within 200ms\n"
    );
    assert_eq!(slow.hits(), 1);
}

#[tokio::test]
async fn a_zero_route_timeout_waits_as_long_as_the_backend_takes() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let slow = backend(Http1, "slow", move |_req, _id| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            respond(StatusCode::OK, "late")
        }
    })
    .await;
    let mut web = route("web", "web.test", Http1, &[&slow]);
    web.timeout = Duration::ZERO;
    let r = router(vec![web]).await;
    let client = H1::new();
    let reply = tokio::spawn(async move { client.get(r.addr(), "web.test", "/").await });
    // The request waits at the backend; only then is it let go.
    eventually("the request at the backend", || slow.hits() == 1).await;
    release.notify_one();
    let reply = within("the reply", reply).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "late")
    );
}

/// Sends raw bytes and returns everything the router answers before closing.
async fn raw(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(input).await.unwrap();
    let mut out = Vec::new();
    within(
        "the router closing the connection",
        tcp.read_to_end(&mut out),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_http_is_400_and_the_router_keeps_serving() {
    let a = replica(Http1, "a").await;
    let r = router(vec![route("web", "web.test", Http1, &[&a])]).await;
    let check = |input: &'static str, want: &'static str| {
        let addr = r.addr();
        async move {
            let out = raw(addr, input.as_bytes()).await;
            assert!(out.starts_with(want), "{input:?} → {out:?}");
        }
    };
    check("NOT HTTP AT ALL\r\n\r\n", "HTTP/1.1 400").await;
    check("G@T / HTTP/1.1\r\nHost: web.test\r\n\r\n", "HTTP/1.1 400").await;
    check(
        "GET / HTTP/1.1\r\nHost: web.test\r\nNo colon here\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    check(
        "GET / HTTP/1.1\r\nHost: web.test\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    check(
        "GET /\x01 HTTP/1.1\r\nHost: web.test\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    check("\x00\x01\x02\x03\r\n\r\n", "HTTP/1.1 400").await;
    check(
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await; // no Host
    check(
        "GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
    check(
        "CONNECT web.test:443 HTTP/1.1\r\nHost: web.test:443\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 405",
    )
    .await;
    assert_eq!(a.hits(), 0);
    assert_eq!(H1::new().get(r.addr(), "web.test", "/").await.body, "a");
}
