//! Shutdown: stop accepting, let in-flight requests finish, then stop.

use std::sync::Arc;

use http::StatusCode;
use kumo_router::BackendProtocol::Http1;
use tokio::sync::Notify;

use crate::support::*;

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = backend(Http1, "slow", {
        let (arrived, release) = (arrived.clone(), release.clone());
        move |_req, id| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                respond(StatusCode::OK, id)
            }
        }
    })
    .await;
    let r = router(vec![route("web", "web.test", Http1, &[&slow])]).await;
    let addr = r.addr();
    let in_flight = tokio::spawn(async move { H1::new().get(addr, "web.test", "/").await });
    within("request reaching the backend", arrived.notified()).await;

    let handle = r.shut_down();
    // The listener closes at once…
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after shutdown"
        );
        tokio::task::yield_now().await;
    }
    // …while the request already in flight completes.
    release.notify_one();
    let reply = within("in-flight request", in_flight).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "slow")
    );
    within("router stopped", handle.stopped()).await;
}
