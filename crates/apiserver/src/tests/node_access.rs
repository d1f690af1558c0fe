//! The Node authorizer and NodeRestriction through the real API: a node credential writes
//! only its own Node and the pods bound to it, and reads only the Secrets and MLTasks those
//! pods use.

use super::rbac::{as_user, setup};
use super::{req, Server};
use kumo_store::{KeyValue, Revision, StoreError, WatchStream};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Pods of team-a: p1 on n1 (pulling with secret pull-1), p2 on n2 (pulling with pull-2).
async fn pods_on_nodes(server: &Server) {
    for (node, pod) in [("n1", "p1"), ("n2", "p2")] {
        server.create("/api/v1/nodes", super::node(node)).await;
        let secret = format!("pull-{}", &node[1..]);
        server
            .create(
                "/api/v1/namespaces/team-a/secrets",
                json!({"metadata": {"name": secret}, "stringData": {"k": "v"}}),
            )
            .await;
        server
            .create(
                "/api/v1/namespaces/team-a/pods",
                json!({"metadata": {"name": pod}, "spec": {"imagePullSecrets": [{"name": secret}],
                    "containers": [{"name": "c", "image": "busybox"}]}}),
            )
            .await;
        server
            .check(
                req("POST", &format!("/api/v1/namespaces/team-a/pods/{pod}/binding"), Some(json!({"metadata": {"name": pod}, "target": {"kind": "Node", "name": node}}))),
                201,
                "",
            )
            .await;
    }
}

#[tokio::test]
async fn a_node_writes_only_itself_and_its_pods_and_reads_only_their_secrets() {
    let server = setup().await;
    pods_on_nodes(&server).await;
    // The watch brings the bindings to the authorizer: wait until n1 may read its pod.
    let deadline = Instant::now() + Duration::from_secs(5);
    let p1 = "/api/v1/namespaces/team-a/pods/p1";
    while server.call(as_user("node-1", req("GET", p1, None))).await.0 == 403 {
        assert!(
            Instant::now() < deadline,
            "n1 cannot read its pod within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cases: &[(&str, &str, Option<Value>, u16, &str)] = &[
        ("GET", "/api/v1/nodes/n1", None, 200, "n1"),
        ("GET", "/api/v1/nodes", None, 200, "n2"),
        (
            "GET",
            "/api/v1/namespaces/team-a/pods?fieldSelector=spec.nodeName%3Dn1",
            None,
            200,
            "p1",
        ),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
            200,
            "\"x\"",
        ),
        (
            "PATCH",
            "/api/v1/nodes/n2",
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
            403,
            r#"node \"n1\" may not act for node \"n2\""#,
        ),
        (
            "PATCH",
            "/api/v1/nodes/n2/status",
            Some(json!({"status": {}})),
            403,
            r#"may not act for node \"n2\""#,
        ),
        (
            "DELETE",
            "/api/v1/nodes/n1",
            None,
            403,
            r#"node \"n1\" may not delete nodes"#,
        ),
        (
            "POST",
            "/api/v1/nodes",
            Some(super::node("n3")),
            403,
            r#"node \"n1\" may not act for node \"n3\""#,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/team-a/pods/p1/status",
            Some(json!({"status": {"message": "hi"}})),
            200,
            "hi",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/team-a/pods/p2/status",
            Some(json!({"status": {"message": "hi"}})),
            403,
            "no relationship found between node",
        ),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            Some(json!({"spec": {"unschedulable": true}})),
            403,
            r#"node \"n1\" may not change its spec"#,
        ),
        (
            "PATCH",
            "/api/v1/nodes/n1",
            Some(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "gpu"}}})),
            403,
            "may not change labels under node-restriction.kubernetes.io/",
        ),
        (
            "POST",
            "/api/v1/nodes",
            Some(
                json!({"metadata": {"name": "n1", "labels": {"node-restriction.kubernetes.io/pool": "gpu"}}}),
            ),
            403,
            "may not set labels under",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets/pull-1",
            None,
            200,
            "pull-1",
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets/pull-2",
            None,
            403,
            r#"node \"n1\" cannot get secrets \"pull-2\" in namespace \"team-a\": no relationship found"#,
        ),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets",
            None,
            403,
            "no relationship",
        ),
        (
            "POST",
            "/api/v1/namespaces/team-a/pods",
            Some(super::pod("mine")),
            403,
            "no relationship",
        ),
        (
            "GET",
            "/apis/kumo.dev/v1/namespaces/team-a/apps",
            None,
            403,
            "no RBAC policy matched",
        ),
    ];
    for (method, path, body, status, message) in cases {
        server
            .check(
                as_user("node-1", req(method, path, body.clone())),
                *status,
                message,
            )
            .await;
    }
    // A task of none of its pods is refused; a task that is gone is a 404, so that the agent
    // removes the directories it kept for it.
    let tasks = "/apis/kumo.dev/v1/namespaces/team-a/mltasks";
    server
        .create(
            tasks,
            json!({"metadata": {"name": "other"}, "spec": {"image": "busybox", "command": ["true"]}}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = server
            .call(as_user(
                "node-1",
                req("GET", &format!("{tasks}/other"), None),
            ))
            .await;
        if code == 403 {
            assert!(body.contains("no relationship"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task never reached the authorizer: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
        .check(
            as_user("node-1", req("GET", &format!("{tasks}/gone"), None)),
            404,
            "not found",
        )
        .await;
    // A node may create its own Node object (which exists here), and delete its own pods.
    server
        .check(
            as_user(
                "node-2",
                req("POST", "/api/v1/nodes", Some(super::node("n2"))),
            ),
            409,
            "AlreadyExists",
        )
        .await;
    server
        .check(
            as_user(
                "node-1",
                req("DELETE", "/api/v1/namespaces/team-a/pods/p2", None),
            ),
            403,
            "no relationship",
        )
        .await;
    // A pod already gone: a 404, as its agent's final delete expects.
    server
        .check(
            as_user(
                "node-1",
                req("DELETE", "/api/v1/namespaces/team-a/pods/never-was", None),
            ),
            404,
            "not found",
        )
        .await;
    server
        .check(
            as_user(
                "node-2",
                req("DELETE", "/api/v1/namespaces/team-a/pods/p2", None),
            ),
            200,
            "p2",
        )
        .await;
    server
        .check(
            as_user("join", req("GET", "/api/v1/nodes", None)),
            403,
            "system:bootstrap:abc123",
        )
        .await;
    server.stop().await;
}

/// A store whose watches under the pods' prefix see nothing: the authorizer's graph of pods
/// never follows the store, as when its watch lags far behind a node's.
struct BlindToPods(kumo_store::MemStore);

#[async_trait::async_trait]
impl kumo_store::Store for BlindToPods {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.0.list(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.0.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.0.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.0.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let blind = prefix.starts_with("/registry/core/pods/");
        let prefix = if blind { "/nothing/" } else { prefix };
        self.0.watch(prefix, after).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.0.current_revision().await
    }
}

/// However far the authorizer's watch lags, a node may write the status of a pod bound to it
/// once the binding is answered (the bind handler tells the authorizer), or once the pod is
/// read from the store (a pod created bound); another node still may not.
#[tokio::test]
async fn a_node_writes_its_pods_status_however_far_the_authorizers_watch_lags() {
    let store = std::sync::Arc::new(BlindToPods(kumo_store::MemStore::new()));
    let server = Server::with_rbac(store, super::rbac::users()).await;
    for node in ["n1", "n2"] {
        server.create("/api/v1/nodes", super::node(node)).await;
    }
    let pods = "/api/v1/namespaces/default/pods";
    let spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    server
        .create(pods, json!({"metadata": {"name": "bound"}, "spec": spec}))
        .await;
    server
        .check(
            req(
                "POST",
                &format!("{pods}/bound/binding"),
                Some(json!({"target": {"kind": "Node", "name": "n1"}})),
            ),
            201,
            "",
        )
        .await;
    let mut created = spec.clone();
    created["nodeName"] = json!("n1");
    server
        .create(
            pods,
            json!({"metadata": {"name": "created"}, "spec": created}),
        )
        .await;
    for pod in ["bound", "created"] {
        let path = format!("{pods}/{pod}/status");
        let status = Some(json!({"status": {"message": "started"}}));
        server
            .check(
                as_user("node-2", req("PATCH", &path, status.clone())),
                403,
                "no relationship found between node",
            )
            .await;
        server
            .check(
                as_user("node-1", req("PATCH", &path, status)),
                200,
                "started",
            )
            .await;
    }
    // A pod nobody bound stays refused to every node.
    server
        .create(pods, json!({"metadata": {"name": "unbound"}, "spec": spec}))
        .await;
    server
        .check(
            as_user("node-1", req("GET", &format!("{pods}/unbound"), None)),
            403,
            "no relationship found between node",
        )
        .await;
}
