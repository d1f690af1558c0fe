//! Leases: `kumo-system` made at start, and optimistic concurrency, which leader election rests on.

use super::*;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kumo-system/leases";

fn lease(holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kumo-scheduler", "namespace": "kumo-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": "2026-12-07T15:00:00.123456Z", "leaseTransitions": 0}})
}

#[tokio::test]
async fn kumo_system_is_made_at_start_and_cannot_be_deleted() {
    let s = Server::start().await;
    s.check(
        req("GET", "/api/v1/namespaces/kumo-system", None),
        200,
        "\"kumo-system\"",
    )
    .await;
    s.check(
        req("DELETE", "/api/v1/namespaces/kumo-system", None),
        403,
        "this namespace may not be deleted",
    )
    .await;
}

#[tokio::test]
async fn a_stale_lease_update_is_a_conflict() {
    let s = Server::start().await;
    let created = s.create(LEASES, lease("a")).await;
    assert_eq!(created["spec"]["renewTime"], "2026-12-07T15:00:00.123456Z");
    let path = format!("{LEASES}/kumo-scheduler");
    // Two electors read the same version; the first write wins, the second is refused.
    let mut first = created.clone();
    first["spec"]["holderIdentity"] = json!("b");
    let updated = s.check(req("PUT", &path, Some(first)), 200, "\"b\"").await;
    assert_ne!(rv(&updated), rv(&created));
    let mut second = created.clone();
    second["spec"]["holderIdentity"] = json!("c");
    s.check(
        req("PUT", &path, Some(second)),
        409,
        "the object has been modified",
    )
    .await;
    let got = s.check(req("GET", &path, None), 200, "").await;
    assert_eq!(got["spec"]["holderIdentity"], "b");
    // A bad spec names its field and changes nothing.
    let mut bad = got.clone();
    bad["spec"]["leaseDurationSeconds"] = json!(0);
    s.check(
        req("PUT", &path, Some(bad)),
        422,
        "spec.leaseDurationSeconds: Invalid value: 0",
    )
    .await;
}

#[tokio::test]
async fn a_node_may_do_nothing_with_leases() {
    use super::rbac::{as_user, setup};
    let s = setup().await;
    let path = format!("{LEASES}/kumo-scheduler");
    s.create(LEASES, lease("server-a")).await;
    let taken = lease("node-1");
    for (r, token) in [
        (req("GET", &path, None), "node-1"),
        (req("GET", LEASES, None), "node-1"),
        (req("PUT", &path, Some(taken.clone())), "node-1"),
        (req("DELETE", &path, None), "node-1"),
        (req("POST", LEASES, Some(taken)), "join"),
    ] {
        let (status, body) = s.call(as_user(token, r)).await;
        assert_eq!(status, 403, "{token}: {body}");
    }
    let got = s.check(req("GET", &path, None), 200, "").await;
    assert_eq!(got["spec"]["holderIdentity"], "server-a");
}
