//! Passive health (ejection, half-open probe) and retries only for requests never sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use kumo_router::BackendProtocol::Http1;
use kumo_router::{Endpoint, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

fn config(eject_after: u32, eject_for: Duration) -> RouterConfig {
    RouterConfig {
        eject_after,
        eject_for,
        ..RouterConfig::default()
    }
}

/// A backend that answers 500 while `failing` is set, else 200 with its id.
async fn flaky(id: &str, failing: Arc<AtomicBool>) -> Backend {
    backend(Http1, id, move |_req, id| {
        let failing = failing.clone();
        async move {
            if failing.load(Ordering::SeqCst) {
                respond(StatusCode::INTERNAL_SERVER_ERROR, "broken")
            } else {
                respond(StatusCode::OK, id)
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_after_consecutive_failures() {
    let good = replica(Http1, "good").await;
    let bad = flaky("bad", Arc::new(AtomicBool::new(true))).await;
    let r = router_with(
        config(3, Duration::from_secs(600)),
        vec![route("web", "web.test", Http1, &[&good, &bad])],
    )
    .await;
    let client = H1::new();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(client.get(r.addr(), "web.test", "/").await.status);
    }
    // 5xx answers are passed on (the request was sent), three of them eject the endpoint.
    assert_eq!(bad.hits(), 3);
    assert_eq!(statuses.iter().filter(|s| s.is_server_error()).count(), 3);
    assert_eq!(good.hits(), 37);
}

#[tokio::test]
async fn an_ejected_endpoint_is_probed_after_eject_for_and_readmitted() {
    let eject_for = Duration::from_millis(300);
    let good = replica(Http1, "good").await;
    let failing = Arc::new(AtomicBool::new(true));
    let bad = flaky("bad", failing.clone()).await;
    let r = router_with(
        config(2, eject_for),
        vec![route("web", "web.test", Http1, &[&good, &bad])],
    )
    .await;
    let client = H1::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The ejection happened during the last request, so not before it was sent.
    let mut ejected_at = Instant::now();
    while bad.hits() < 2 {
        assert!(Instant::now() < deadline, "bad endpoint never picked");
        ejected_at = Instant::now();
        client.get(r.addr(), "web.test", "/").await;
    }
    failing.store(false, Ordering::SeqCst);
    // The next request to reach it is the half-open probe, not before eject_for.
    while bad.hits() < 3 {
        assert!(Instant::now() < deadline, "ejected endpoint never probed");
        let reply = client.get(r.addr(), "web.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert!(
        ejected_at.elapsed() >= eject_for,
        "probed after {:?}",
        ejected_at.elapsed()
    );
    // The probe succeeded: the endpoint takes its share again.
    let mut bodies = Vec::new();
    for _ in 0..30 {
        bodies.push(client.get(r.addr(), "web.test", "/").await.body);
    }
    let t = tally(bodies.iter().map(String::as_str));
    assert!(t.get("bad").copied().unwrap_or(0) > 0, "{t:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint_and_ejects() {
    let good = replica(Http1, "good").await;
    let dead = Endpoint::new(dead_addr().await, "dead");
    let mut web = route("web", "web.test", Http1, &[&good]);
    web.endpoints.insert(0, dead);
    let r = router_with(config(2, Duration::from_secs(600)), vec![web]).await;
    let client = H1::new();
    for _ in 0..30 {
        let reply = client.get(r.addr(), "web.test", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "good")
        );
    }
    assert_eq!(good.hits(), 30);
    // Two refusals ejected the dead endpoint; it was not tried again.
    assert_eq!(r.handle.metrics.upstream_errors_of("web"), 2);
}

#[tokio::test]
async fn every_endpoint_refusing_is_502() {
    let mut web = route("web", "web.test", Http1, &[]);
    web.endpoints = vec![
        Endpoint::new(dead_addr().await, "d1"),
        Endpoint::new(dead_addr().await, "d2"),
    ];
    let r = router(vec![web]).await;
    let reply = H1::new().get(r.addr(), "web.test", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply
            .body
            .starts_with("no endpoint of app web accepted a connection ("),
        "{reply:?}"
    );
    assert!(reply.body.contains("refused"), "{reply:?}");
}

/// A backend that reads a request, writes half a response head and closes; counts requests.
async fn breaks_mid_response() -> (Endpoint, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            });
        }
    });
    (Endpoint::new(addr, "broken"), hits)
}

#[tokio::test]
async fn a_request_that_went_out_is_never_retried() {
    let good = replica(Http1, "good").await;
    let (broken, broken_hits) = breaks_mid_response().await;
    let mut web = route("web", "web.test", Http1, &[&good]);
    web.endpoints.push(broken);
    // Ejection off, so the broken endpoint keeps being picked.
    let r = router_with(config(0, Duration::ZERO), vec![web]).await;
    let client = H1::new();
    let mut bad_gateway = 0;
    for _ in 0..30 {
        let reply = client.get(r.addr(), "web.test", "/").await;
        match reply.status {
            StatusCode::OK => assert_eq!(reply.body, "good"),
            StatusCode::BAD_GATEWAY => {
                assert!(reply.body.starts_with("upstream 127.0.0.1:"), "{reply:?}");
                bad_gateway += 1;
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    let broken_hits = broken_hits.load(Ordering::SeqCst);
    assert!(broken_hits > 0);
    // Each request the broken backend received came back as a 502, none went on to `good`.
    assert_eq!(bad_gateway, broken_hits);
    assert_eq!(good.hits(), 30 - broken_hits);
}
