//! What the backend sees: X-Forwarded-*, X-Request-Id, Host, and no hop-by-hop headers.

use http::StatusCode;
use kumo_router::BackendProtocol::{H2c, Http1};

use crate::support::*;

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn forwarded_headers_and_request_id() {
    let a = replica(Http1, "a").await;
    let r = router(vec![route("web", "web.test", Http1, &[&a])]).await;
    let client = H1::new();

    let reply = client
        .send(
            r.addr(),
            "Web.Test:8080",
            "/x",
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "req-1"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "basic eA=="),
                ("te", "trailers"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-request-id"], "req-1");
    let seen = &a.seen()[0];
    assert_eq!(header(seen, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(header(seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(seen, "x-forwarded-host"), Some("web.test"));
    assert_eq!(header(seen, "x-request-id"), Some("req-1"));
    assert_eq!(header(seen, "host"), Some("Web.Test:8080"));
    assert_eq!(header(seen, "te"), Some("trailers"));
    for hop in ["x-secret", "keep-alive", "proxy-authorization"] {
        assert_eq!(header(seen, hop), None, "{hop} was forwarded");
    }

    // Without an id, the router makes one and answers with it.
    let reply = client.get(r.addr(), "web.test", "/y").await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let seen = &a.seen()[1];
    assert_eq!(header(seen, "x-request-id"), Some(id.as_str()));
    assert_eq!(header(seen, "x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let a = backend(Http1, "a", |_req, _id| async {
        let mut r = respond(StatusCode::OK, "ok");
        r.headers_mut()
            .insert("connection", "x-internal".parse().unwrap());
        r.headers_mut().insert("x-internal", "1".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=1".parse().unwrap());
        r.headers_mut().insert("x-app", "kept".parse().unwrap());
        r
    })
    .await;
    let r = router(vec![route("web", "web.test", Http1, &[&a])]).await;
    let reply = H1::new().get(r.addr(), "web.test", "/").await;
    assert_eq!(reply.headers.get("x-internal"), None);
    assert_eq!(reply.headers.get("keep-alive"), None);
    assert_eq!(reply.headers["x-app"], "kept");
}

#[tokio::test]
async fn http2_clients_reach_http1_backends_with_a_host_header_and_h2c_backends_without() {
    let h1 = replica(Http1, "h1").await;
    let h2 = replica(H2c, "h2").await;
    let r = router(vec![
        route("one", "one.test", Http1, &[&h1]),
        route("two", "two.test", H2c, &[&h2]),
    ])
    .await;
    let conn = H2::connect(r.addr()).await;
    assert_eq!(conn.get("http", "one.test", "/").await.body, "h1");
    assert_eq!(conn.get("http", "two.test", "/").await.body, "h2");
    assert_eq!(header(&h1.seen()[0], "host"), Some("one.test"));
    let seen = &h2.seen()[0];
    assert_eq!(header(seen, "host"), None);
    assert_eq!(header(seen, "x-forwarded-host"), Some("two.test"));
    // And an HTTP/1.1 client reaches an h2c backend.
    assert_eq!(H1::new().get(r.addr(), "two.test", "/").await.body, "h2");
}
