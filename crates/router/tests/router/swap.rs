//! Route table updates under load: no failed request, old then new backends, in-flight
//! requests finish where they started.

use std::sync::Arc;

use http::StatusCode;
use kumo_router::BackendProtocol::{H2c, Http1};
use tokio::sync::{watch, Notify};

use crate::support::*;

/// An old-release replica: `/slow` waits for `release` (after announcing itself on `arrived`).
async fn old_replica(id: &str, arrived: Arc<Notify>, release: Arc<Notify>) -> Backend {
    backend(Http1, id, move |req, id| {
        let (arrived, release) = (arrived.clone(), release.clone());
        async move {
            if req.uri().path() == "/slow" {
                arrived.notify_one();
                release.notified().await;
            }
            respond(StatusCode::OK, id)
        }
    })
    .await
}

#[tokio::test]
async fn a_table_swap_under_load_fails_nothing_and_moves_to_the_new_backends() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let old1 = old_replica("old-1", arrived.clone(), release.clone()).await;
    let old2 = old_replica("old-2", arrived.clone(), release.clone()).await;
    let (new1, new2) = (replica(Http1, "new-1").await, replica(Http1, "new-2").await);
    let r = router(vec![route("web", "web.test", Http1, &[&old1, &old2])]).await;

    // Everything goes over ONE HTTP/2 connection: no connection is dropped by the swap.
    let conn = H2::connect(r.addr()).await;
    let slow = tokio::spawn({
        let conn = conn.clone();
        async move { conn.get("http", "web.test", "/slow").await }
    });
    within("slow request reaching an old replica", arrived.notified()).await;

    let (progress_tx, mut progress) = watch::channel(0usize);
    let load = tokio::spawn({
        let conn = conn.clone();
        async move {
            let mut replies = Vec::new();
            for i in 0..400 {
                replies.push(conn.get("http", "web.test", "/").await);
                let _ = progress_tx.send(i + 1);
            }
            replies
        }
    });
    within("load under way", progress.wait_for(|n| *n >= 50))
        .await
        .unwrap();
    let mut web = route("web", "web.test", Http1, &[&new1, &new2]);
    web.draining = vec![old1.endpoint(), old2.endpoint()];
    r.routes.send(table(vec![web])).unwrap();
    let replies = within("load", load).await.unwrap();

    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "a request failed"
    );
    let first_new = replies
        .iter()
        .position(|r| r.body.starts_with("new-"))
        .expect("the load never saw the new backends");
    assert!(first_new >= 50, "new backends before the swap");
    assert!(replies[..first_new]
        .iter()
        .all(|r| r.body.starts_with("old-")));
    assert!(
        replies[first_new..]
            .iter()
            .all(|r| r.body.starts_with("new-")),
        "an old backend got a request after the new table was seen"
    );
    assert!(
        replies.len() - first_new > 100,
        "the swap took too long to be seen"
    );
    let t = tally(replies[first_new..].iter().map(|r| r.body.as_str()));
    assert_eq!(t.len(), 2, "both new replicas serve: {t:?}");

    // The request that was in flight on an old (now draining) replica still finishes there.
    release.notify_one();
    let slow = within("slow request", slow).await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert!(slow.body.starts_with("old-"), "{slow:?}");
}

#[tokio::test]
async fn routes_appear_and_disappear_without_restart() {
    let a = replica(H2c, "a").await;
    let r = router(vec![]).await;
    let client = H1::new();
    assert_eq!(
        client.get(r.addr(), "new.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    r.routes
        .send(table(vec![route("new", "new.test", H2c, &[&a])]))
        .unwrap();
    let mut last = StatusCode::NOT_FOUND;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while last == StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "route never appeared");
        last = client.get(r.addr(), "new.test", "/").await.status;
    }
    assert_eq!(last, StatusCode::OK);
    r.routes.send(table(vec![])).unwrap();
    while last == StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "route never went away"
        );
        last = client.get(r.addr(), "new.test", "/").await.status;
    }
    assert_eq!(last, StatusCode::NOT_FOUND);
}
