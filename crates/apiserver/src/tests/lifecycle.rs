//! Deletion (immediate, graceful, finalizers), namespace deletion, and binding.

use super::*;

#[tokio::test]
async fn unbound_pod_deletes_at_once() {
    let s = Server::start().await;
    s.create(PODS, pod("a")).await;
    let last = s
        .check(req("DELETE", &format!("{PODS}/a"), None), 200, "\"a\"")
        .await;
    assert_eq!(last["kind"], "Pod");
    s.check(req("GET", &format!("{PODS}/a"), None), 404, "not found")
        .await;
    s.check(
        req("DELETE", &format!("{PODS}/a"), None),
        404,
        r#"pods \"a\" not found"#,
    )
    .await;
}

#[tokio::test]
async fn graceful_pod_delete_then_completion() {
    let s = Server::start().await;
    let mut p = pod("a");
    p["spec"]["terminationGracePeriodSeconds"] = json!(12);
    s.create(PODS, p).await;
    bind_to_new_node(&s, "a", "n1").await;
    let path = format!("{PODS}/a");

    let marked = s
        .check(req("DELETE", &path, None), 200, "deletionTimestamp")
        .await;
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 12);
    let still = s
        .check(req("GET", &path, None), 200, "deletionTimestamp")
        .await;
    assert_eq!(still, marked);
    // Deleting again does not extend the grace period, but may shorten it.
    let again = s.check(req("DELETE", &path, None), 200, "").await;
    assert_eq!(again, marked);
    let shorter = s
        .check(
            req("DELETE", &format!("{path}?gracePeriodSeconds=3"), None),
            200,
            "",
        )
        .await;
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 3);
    assert_eq!(
        shorter["metadata"]["deletionTimestamp"],
        marked["metadata"]["deletionTimestamp"]
    );
    // Clients cannot clear the deletion mark.
    let mut clear = shorter.clone();
    clear["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    clear["metadata"]["labels"]["x"] = json!("y");
    let kept = s.check(req("PUT", &path, Some(clear)), 200, "").await;
    assert_eq!(
        kept["metadata"]["deletionTimestamp"],
        marked["metadata"]["deletionTimestamp"]
    );

    // The agent, once the containers are stopped, deletes with grace 0.
    s.check(
        req("DELETE", &format!("{path}?gracePeriodSeconds=0"), None),
        200,
        "",
    )
    .await;
    s.check(req("GET", &path, None), 404, "not found").await;

    // A pod that reaches a terminal phase while being deleted goes with that status write.
    s.create(PODS, pod("b")).await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/b/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;
    s.check(
        req("DELETE", &format!("{PODS}/b"), None),
        200,
        "deletionTimestamp",
    )
    .await;
    s.check(
        req(
            "PATCH",
            &format!("{PODS}/b/status"),
            Some(json!({"status": {"phase": "Succeeded"}})),
        ),
        200,
        "Succeeded",
    )
    .await;
    s.check(req("GET", &format!("{PODS}/b"), None), 404, "not found")
        .await;

    // A finished pod deletes at once.
    s.create(PODS, pod("c")).await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/c/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;
    s.check(
        req(
            "PATCH",
            &format!("{PODS}/c/status"),
            Some(json!({"status": {"phase": "Failed"}})),
        ),
        200,
        "",
    )
    .await;
    s.check(req("DELETE", &format!("{PODS}/c"), None), 200, "")
        .await;
    s.check(req("GET", &format!("{PODS}/c"), None), 404, "not found")
        .await;
}

#[tokio::test]
async fn removing_the_last_finalizer_completes_deletion() {
    let s = Server::start().await;
    let mut p = pod("a");
    p["metadata"]["finalizers"] = json!(["kumo.dev/a", "kumo.dev/b"]);
    s.create(PODS, p).await;
    let path = format!("{PODS}/a");
    let marked = s
        .check(
            req("DELETE", &format!("{path}?gracePeriodSeconds=0"), None),
            200,
            "deletionTimestamp",
        )
        .await;
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    let one = s
        .check(
            req(
                "PATCH",
                &path,
                Some(json!({"metadata": {"finalizers": ["kumo.dev/b"]}})),
            ),
            200,
            "",
        )
        .await;
    assert_eq!(one["metadata"]["finalizers"], json!(["kumo.dev/b"]));
    s.check(req("GET", &path, None), 200, "").await;
    s.check(
        req(
            "PATCH",
            &path,
            Some(json!({"metadata": {"finalizers": null}})),
        ),
        200,
        "",
    )
    .await;
    s.check(req("GET", &path, None), 404, "not found").await;

    // Nodes (cluster-scoped) too, through PUT.
    let mut n = node("n1");
    n["metadata"]["finalizers"] = json!(["x"]);
    s.create("/api/v1/nodes", n).await;
    let marked = s
        .check(
            req("DELETE", "/api/v1/nodes/n1", None),
            200,
            "deletionTimestamp",
        )
        .await;
    let mut done = marked.clone();
    done["metadata"]["finalizers"] = json!([]);
    s.check(req("PUT", "/api/v1/nodes/n1", Some(done)), 200, "")
        .await;
    s.check(req("GET", "/api/v1/nodes/n1", None), 404, "not found")
        .await;
}

#[tokio::test]
async fn namespace_deletion_empties_then_removes() {
    let s = Server::start().await;
    s.check(
        req("DELETE", "/api/v1/namespaces/default", None),
        403,
        "this namespace may not be deleted",
    )
    .await;
    s.check(
        req("DELETE", "/api/v1/namespaces/ghost", None),
        404,
        r#"namespaces \"ghost\" not found"#,
    )
    .await;

    s.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    let team = "/api/v1/namespaces/team";
    s.create(&format!("{team}/pods"), pod("idle")).await;
    s.create(&format!("{team}/pods"), pod("running")).await;
    s.create("/api/v1/nodes", node("n1")).await;
    s.check(
        req(
            "POST",
            &format!("{team}/pods/running/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;
    s.create(&format!("{team}/events"), json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "involvedObject": {"name": "idle"}, "reason": "Created"})).await;
    // An object in another namespace with a similar name stays.
    s.create("/api/v1/namespaces", json!({"metadata": {"name": "team2"}}))
        .await;
    s.create("/api/v1/namespaces/team2/pods", pod("idle")).await;

    let ns = s.check(req("DELETE", team, None), 200, "Terminating").await;
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    s.check(req("GET", &format!("{team}/pods/idle"), None), 404, "")
        .await;
    s.check(req("GET", &format!("{team}/events/e1"), None), 404, "")
        .await;
    s.check(
        req("GET", &format!("{team}/pods/running"), None),
        200,
        "deletionTimestamp",
    )
    .await;
    s.check(
        req("POST", &format!("{team}/pods"), Some(pod("new"))),
        403,
        "because it is being terminated",
    )
    .await;
    s.check(req("GET", team, None), 200, "Terminating").await;

    // The running pod's final delete empties the namespace, which goes with it.
    s.check(
        req(
            "DELETE",
            &format!("{team}/pods/running?gracePeriodSeconds=0"),
            None,
        ),
        200,
        "",
    )
    .await;
    s.check(req("GET", team, None), 404, "not found").await;
    s.check(
        req("GET", "/api/v1/namespaces/team2/pods/idle", None),
        200,
        "",
    )
    .await;

    // An empty namespace goes in the delete request itself.
    s.create("/api/v1/namespaces", json!({"metadata": {"name": "empty"}}))
        .await;
    s.check(
        req("DELETE", "/api/v1/namespaces/empty", None),
        200,
        "\"empty\"",
    )
    .await;
    s.check(req("GET", "/api/v1/namespaces/empty", None), 404, "")
        .await;
}

#[tokio::test]
async fn binding() {
    let s = Server::start().await;
    s.create(PODS, pod("a")).await;
    let bind = |target: &str| {
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(
                json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "a"}, "target": {"kind": "Node", "name": target}}),
            ),
        )
    };
    s.check(bind("n1"), 404, r#"nodes \"n1\" not found"#).await;
    s.create("/api/v1/nodes", node("n1")).await;
    s.create("/api/v1/nodes", node("n2")).await;
    s.check(bind("n1"), 201, "Success").await;
    let p = s
        .check(req("GET", &format!("{PODS}/a"), None), 200, "")
        .await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    let scheduled: Vec<&Value> = p["status"]["conditions"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["type"] == "PodScheduled").collect())
        .unwrap_or_default();
    assert_eq!(scheduled.len(), 1, "one PodScheduled condition: {p}");
    assert_eq!(scheduled[0]["status"], "True");
    s.check(bind("n2"), 409, "pod a is already assigned to node n1")
        .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/ghost/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        404,
        r#"pods \"ghost\" not found"#,
    )
    .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(json!({"target": {}})),
        ),
        422,
        "target.name: Required value",
    )
    .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(json!({"target": {"name": "n1"}, "extra": 1})),
        ),
        422,
        "extra: unknown field",
    )
    .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(json!({"metadata": {"name": "b"}, "target": {"name": "n1"}})),
        ),
        400,
        "does not match the name on the url",
    )
    .await;
    // Pods may not be bound by an update.
    s.create(PODS, pod("b")).await;
    s.check(
        req(
            "PATCH",
            &format!("{PODS}/b"),
            Some(json!({"spec": {"nodeName": "n1"}})),
        ),
        422,
        "spec: Forbidden",
    )
    .await;
}

#[tokio::test]
async fn eviction_deletes_a_bare_pod_and_marks_a_replica_for_its_controller() {
    let s = Server::start().await;
    let evict =
        |name: &str, body: Value| req("POST", &format!("{PODS}/{name}/eviction"), Some(body));
    let eviction = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
    // A bare pod not yet on a node is deleted at once.
    s.create(PODS, pod("bare")).await;
    s.check(evict("bare", eviction("bare")), 201, "pod bare deleted")
        .await;
    s.check(req("GET", &format!("{PODS}/bare"), None), 404, "not found")
        .await;
    // A bound, running bare pod gets its grace period (the agent completes the delete).
    s.create(PODS, pod("bound")).await;
    bind_to_new_node(&s, "bound", "n1").await;
    s.check(
        evict("bound", json!({"deleteOptions": {"gracePeriodSeconds": 7}})),
        201,
        "",
    )
    .await;
    let got = s
        .check(req("GET", &format!("{PODS}/bound"), None), 200, "")
        .await;
    assert_eq!(got["metadata"]["deletionGracePeriodSeconds"], 7);
    // An App replica is only marked: the App controller replaces it first.
    let mut replica = pod("web-v1-web-x");
    replica["metadata"]["labels"] =
        json!({"kumo.dev/app": "web", "kumo.dev/release": "1", "kumo.dev/process": "web"});
    s.create(PODS, replica).await;
    s.check(
        evict("web-v1-web-x", eviction("web-v1-web-x")),
        201,
        "will go once a replacement of app web is ready on another node",
    )
    .await;
    let got = s
        .check(req("GET", &format!("{PODS}/web-v1-web-x"), None), 200, "")
        .await;
    assert!(got["metadata"]["deletionTimestamp"].is_null());
    let mark = got["metadata"]["annotations"]["kumo.dev/eviction-requested"].clone();
    assert!(mark.is_string(), "{got}");
    // Asking again changes nothing.
    s.check(evict("web-v1-web-x", json!({})), 201, "").await;
    let again = s
        .check(req("GET", &format!("{PODS}/web-v1-web-x"), None), 200, "")
        .await;
    assert_eq!(rv(&again), rv(&got));
    // Bad requests name the field and change nothing; unknown pods are 404.
    s.create(PODS, pod("keep")).await;
    for (body, field) in [
        (json!({"kind": "Binding"}), "kind"),
        (json!({"metadata": {"name": "other"}}), "metadata.name"),
        (
            json!({"deleteOptions": {"gracePeriodSeconds": -3}}),
            "deleteOptions.gracePeriodSeconds",
        ),
        (json!({"spec": {}}), "spec"),
    ] {
        s.check(evict("keep", body), 422, field).await;
    }
    s.check(req("GET", &format!("{PODS}/keep"), None), 200, "")
        .await;
    s.check(
        evict("ghost", json!({})),
        404,
        r#"pods \"ghost\" not found"#,
    )
    .await;
    s.check(req("GET", &format!("{PODS}/keep/eviction"), None), 405, "")
        .await;
}
