//! Every request is balanced, HTTP/1.1 and HTTP/2 alike; draining endpoints get nothing new.

use futures_util::future::join_all;
use http::StatusCode;
use kumo_router::BackendProtocol::{H2c, Http1};

use crate::support::*;

#[tokio::test]
async fn three_http1_backends_all_receive_requests() {
    let (a, b, c) = (
        replica(Http1, "a").await,
        replica(Http1, "b").await,
        replica(Http1, "c").await,
    );
    let r = router(vec![route("web", "web.test", Http1, &[&a, &b, &c])]).await;
    let client = H1::new();
    let mut bodies = Vec::new();
    for _ in 0..30 {
        let reply = client.get(r.addr(), "web.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        bodies.push(reply.body);
    }
    let t = tally(bodies.iter().map(String::as_str));
    assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "b", "c"], "{t:?}");
}

#[tokio::test]
async fn one_h2_connection_spreads_over_three_h2c_backends() {
    let (a, b, c) = (
        replica(H2c, "a").await,
        replica(H2c, "b").await,
        replica(H2c, "c").await,
    );
    let r = router(vec![route("grpc", "grpc.test", H2c, &[&a, &b, &c])]).await;
    let conn = H2::connect(r.addr()).await;
    // 30 calls on ONE connection, 10 at a time (HTTP/2 multiplexing).
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let replies = join_all((0..10).map(|_| conn.get("http", "grpc.test", "/"))).await;
        for reply in replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            bodies.push(reply.body);
        }
    }
    let t = tally(bodies.iter().map(String::as_str));
    assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "b", "c"], "{t:?}");
    assert_eq!(a.hits() + b.hits() + c.hits(), 30);
}

#[tokio::test]
async fn draining_endpoints_get_no_new_requests() {
    let (live, old) = (replica(Http1, "live").await, replica(Http1, "old").await);
    let mut web = route("web", "web.test", Http1, &[&live]);
    web.draining = vec![old.endpoint()];
    // Named in both lists: draining wins.
    let mut both = route("both", "both.test", Http1, &[&live, &old]);
    both.draining = vec![old.endpoint()];
    let r = router(vec![web, both]).await;
    let client = H1::new();
    for host in ["web.test", "both.test"] {
        for _ in 0..20 {
            assert_eq!(client.get(r.addr(), host, "/").await.body, "live");
        }
    }
    assert_eq!(old.hits(), 0);
}

#[tokio::test]
async fn routes_by_host_and_longest_path_prefix() {
    let (site, api, v2) = (
        replica(Http1, "site").await,
        replica(Http1, "api").await,
        replica(H2c, "v2").await,
    );
    let mut api_route = route("api", "shop.test", Http1, &[&api]);
    api_route.path_prefix = Some("/api".into());
    let mut v2_route = route("v2", "shop.test", H2c, &[&v2]);
    v2_route.path_prefix = Some("/api/v2".into());
    let r = router(vec![
        route("site", "Shop.Test", Http1, &[&site]),
        v2_route,
        api_route,
    ])
    .await;
    let client = H1::new();
    for (host, path, want) in [
        ("shop.test", "/", "site"),
        ("SHOP.test:8080", "/apiary", "site"),
        ("shop.test", "/api", "api"),
        ("shop.test", "/api/users?id=1", "api"),
        ("shop.test", "/api/v2/x", "v2"),
    ] {
        let reply = client.get(r.addr(), host, path).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, want),
            "{host}{path}"
        );
    }
    assert_eq!(api.seen()[1].path, "/api/users");
}
