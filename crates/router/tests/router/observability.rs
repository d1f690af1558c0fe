//! The access log line and the Prometheus metrics.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use kumo_router::BackendProtocol::Http1;
use kumo_router::{AccessLog, RouterConfig};

use crate::support::*;

#[tokio::test]
async fn an_access_log_line_per_request() {
    let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
    let text = || String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    let a = replica(Http1, "a").await;
    let config = RouterConfig {
        access_log: AccessLog::Writer(buffer.clone()),
        ..RouterConfig::default()
    };
    let r = router_with(config, vec![route("web", "web.test", Http1, &[&a])]).await;
    let client = H1::new();
    client
        .send(
            r.addr(),
            "web.test",
            "/hello?secret=1",
            &[("x-request-id", "log-1")],
        )
        .await;
    client.get(r.addr(), "nowhere.test", "/missing").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Lines are written out in batches, at least every 100 ms.
    while text().lines().filter(|l| l.contains("method=")).count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "two access log lines expected in {:?}",
            text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let text = text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("method=")).collect();
    let upstream = a.addr.to_string();
    for want in [
        "kumo_router::access",
        "method=GET",
        "host=web.test",
        "path=/hello",
        "status=200",
        "app=web",
        &upstream,
        "log-1",
        "duration_ms=",
    ] {
        assert!(lines[0].contains(want), "{want:?} missing in {}", lines[0]);
    }
    assert!(
        !lines[0].contains("secret"),
        "the query was logged: {}",
        lines[0]
    );
    for want in ["host=nowhere.test", "path=/missing", "status=404"] {
        assert!(lines[1].contains(want), "{want:?} missing in {}", lines[1]);
    }
}

#[tokio::test]
async fn prometheus_metrics_count_requests_latency_and_upstream_errors() {
    let a = replica(Http1, "a").await;
    let mut dead = route("dead", "dead.test", Http1, &[]);
    dead.endpoints
        .push(kumo_router::Endpoint::new(dead_addr().await, "d"));
    let r = router(vec![
        route("web", "web.test", Http1, &[&a]),
        route("empty", "empty.test", Http1, &[]),
        dead,
    ])
    .await;
    let client = H1::new();
    for _ in 0..4 {
        assert_eq!(
            client.get(r.addr(), "web.test", "/").await.status,
            StatusCode::OK
        );
    }
    client.get(r.addr(), "empty.test", "/").await;
    assert_eq!(
        client.get(r.addr(), "dead.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    let metrics = r.handle.metrics.clone();
    eventually("the requests counted", || {
        let text = metrics.encode();
        text.contains(r#"kumo_router_request_duration_seconds_count{app="web"} 4"#)
            && text.contains(r#"kumo_router_requests_total{app="dead",class="5xx"} 1"#)
    })
    .await;
    let text = metrics.encode();
    for want in [
        r#"kumo_router_requests_total{app="web",class="2xx"} 4"#,
        r#"kumo_router_requests_total{app="empty",class="5xx"} 1"#,
        r#"kumo_router_request_duration_seconds_bucket{le="0.0005",app="web"}"#,
        r#"kumo_router_upstream_errors_total{app="dead",kind="connect"} 1"#,
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
    assert_eq!(metrics.upstream_errors_of("dead"), 1);
    assert_eq!(metrics.upstream_errors_of("web"), 0);
}
