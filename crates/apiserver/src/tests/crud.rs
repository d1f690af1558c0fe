//! Create, get, list with selectors, update with optimistic concurrency, merge patch, status.

use super::*;

#[tokio::test]
async fn create_get_list() {
    let s = Server::start().await;
    let created = s.create(PODS, pod("web")).await;
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"].is_string());
    assert_eq!(
        created["spec"]["restartPolicy"], "Always",
        "admission defaults are stored"
    );

    let got = s
        .check(req("GET", &format!("{PODS}/web"), None), 200, "\"web\"")
        .await;
    assert_eq!(got, created);
    s.check(
        req("GET", &format!("{PODS}/nope"), None),
        404,
        r#"pods \"nope\" not found"#,
    )
    .await;
    s.check(
        req("POST", PODS, Some(pod("web"))),
        409,
        r#"pods \"web\" already exists"#,
    )
    .await;

    let mut other = pod("db");
    other["metadata"]["labels"] = json!({"app": "db"});
    s.create(PODS, other).await;
    let list = s.check(req("GET", PODS, None), 200, "PodList").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(rv(&list) >= rv(&created));
    let list = s
        .check(
            req("GET", "/api/v1/pods?labelSelector=app%3Ddb", None),
            200,
            "",
        )
        .await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("db")]);
    let list = s
        .check(
            req(
                "GET",
                &format!("{PODS}?labelSelector=app%20notin%20(db,x)"),
                None,
            ),
            200,
            "",
        )
        .await;
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    s.check(
        req("GET", &format!("{PODS}?labelSelector=app%3D%3D%3D"), None),
        400,
        "labelSelector",
    )
    .await;

    bind_to_new_node(&s, "web", "n1").await;
    let list = s
        .check(
            req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None),
            200,
            "",
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["spec"]["nodeName"], "n1");
    let list = s
        .check(
            req("GET", "/api/v1/pods?fieldSelector=metadata.name%3Ddb", None),
            200,
            "",
        )
        .await;
    assert_eq!(list["items"][0]["metadata"]["name"], "db");

    // Cluster-scoped and other namespaces.
    let nodes = s
        .check(req("GET", "/api/v1/nodes", None), 200, "NodeList")
        .await;
    assert_eq!(nodes["items"][0]["metadata"]["name"], "n1");
    s.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    let p = s.create("/api/v1/namespaces/team/pods", pod("web")).await;
    assert_eq!(p["metadata"]["namespace"], "team");
    let all = s.check(req("GET", "/api/v1/pods", None), 200, "").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let team = s
        .check(req("GET", "/api/v1/namespaces/team/pods", None), 200, "")
        .await;
    assert_eq!(team["items"].as_array().unwrap().len(), 1);
    let ns = s
        .check(req("GET", "/api/v1/namespaces/team", None), 200, "")
        .await;
    assert_eq!(ns["status"]["phase"], "Active");
}

#[tokio::test]
async fn create_checks() {
    let s = Server::start().await;
    s.check(
        req("POST", "/api/v1/namespaces/ghost/pods", Some(pod("a"))),
        404,
        r#"namespaces \"ghost\" not found"#,
    )
    .await;
    let mut wrong_ns = pod("a");
    wrong_ns["metadata"]["namespace"] = json!("other");
    s.check(
        req("POST", PODS, Some(wrong_ns)),
        400,
        "metadata.namespace: the namespace of the object",
    )
    .await;
    let mut wrong_kind = pod("a");
    wrong_kind["kind"] = json!("Node");
    s.check(req("POST", PODS, Some(wrong_kind)), 400, "kind: ")
        .await;
    let mut wrong_version = pod("a");
    wrong_version["apiVersion"] = json!("v2");
    s.check(req("POST", PODS, Some(wrong_version)), 400, "apiVersion: ")
        .await;
    s.check(req("POST", PODS, Some(json!([1]))), 400, "json object")
        .await;
    let mut r = req("POST", PODS, None);
    r.body = Bytes::from_static(b"{\"apiVersion\": ");
    s.check(
        r,
        400,
        "invalid json in the request body: EOF while parsing",
    )
    .await;

    // Invalid manifests: 422 naming the field, and nothing stored.
    let mut bad_quantity = pod("a");
    bad_quantity["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "12XB"}});
    let status = s
        .check(
            req("POST", PODS, Some(bad_quantity)),
            422,
            r#"spec.containers[0].resources.limits.memory: invalid quantity \"12XB\""#,
        )
        .await;
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.containers[0].resources.limits.memory"
    );
    let mut unknown = pod("a");
    unknown["spec"]["containers"][0]["bogus"] = json!(1);
    s.check(
        req("POST", PODS, Some(unknown)),
        422,
        "spec.containers[0].bogus: unknown field `bogus`",
    )
    .await;
    let mut unknown_meta = pod("a");
    unknown_meta["metadata"]["colour"] = json!("red");
    s.check(
        req("POST", PODS, Some(unknown_meta)),
        422,
        "metadata.colour: unknown field",
    )
    .await;
    s.check(
        req("POST", PODS, Some(pod("Bad_Name"))),
        422,
        "metadata.name: Invalid value",
    )
    .await;
    let list = s.check(req("GET", PODS, None), 200, "").await;
    assert_eq!(list["items"], json!([]), "nothing stored");

    // Server-owned fields are the server's; status is dropped on create for pods.
    let mut sneaky = pod("a");
    sneaky["metadata"]["uid"] = json!("mine");
    sneaky["metadata"]["resourceVersion"] = json!("999");
    sneaky["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
    sneaky["status"] = json!({"phase": "Running"});
    let a = s.create(PODS, sneaky).await;
    assert_ne!(a["metadata"]["uid"], "mine");
    assert_ne!(a["metadata"]["resourceVersion"], "999");
    assert!(a["metadata"].get("deletionTimestamp").is_none());
    assert!(a.get("status").is_none());
    // ...but kept for nodes.
    let mut n = node("n1");
    n["status"] = json!({"capacity": {"cpu": "4"}});
    let n = s.create("/api/v1/nodes", n).await;
    assert_eq!(n["status"]["capacity"]["cpu"], "4");

    // generateName.
    let mut generated = pod("");
    generated["metadata"] = json!({"generateName": "job-"});
    let g = s.create(PODS, generated).await;
    let name = g["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    assert!(name[4..]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    // Missing apiVersion/kind are taken from the path.
    s.create("/api/v1/nodes", json!({"metadata": {"name": "n2"}}))
        .await;
}

#[tokio::test]
async fn update_with_optimistic_concurrency() {
    let s = Server::start().await;
    let created = s.create(PODS, pod("web")).await;
    let v1 = rv(&created);
    let mut changed = created.clone();
    changed["metadata"]["labels"]["tier"] = json!("fe");
    let updated = s
        .check(
            req("PUT", &format!("{PODS}/web"), Some(changed.clone())),
            200,
            "\"tier\":\"fe\"",
        )
        .await;
    assert!(rv(&updated) > v1);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        updated["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );

    // The same body again carries the old resourceVersion: conflict, nothing written.
    changed["metadata"]["labels"]["tier"] = json!("be");
    s.check(
        req("PUT", &format!("{PODS}/web"), Some(changed.clone())),
        409,
        r#"Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"#,
    )
    .await;
    let now = s
        .check(req("GET", &format!("{PODS}/web"), None), 200, "")
        .await;
    assert_eq!(now, updated);

    // Without a resourceVersion the update is unconditional.
    changed["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let forced = s
        .check(
            req("PUT", &format!("{PODS}/web"), Some(changed.clone())),
            200,
            "\"be\"",
        )
        .await;

    // Nothing changed: not written, same resourceVersion (so `apply` can say "unchanged").
    let same = s
        .check(
            req("PUT", &format!("{PODS}/web"), Some(forced.clone())),
            200,
            "",
        )
        .await;
    assert_eq!(same, forced);

    // The body must name the object; pods may not change their spec; ...
    s.check(
        req("PUT", &format!("{PODS}/other"), Some(changed.clone())),
        400,
        "does not match the name on the url",
    )
    .await;
    let mut spec_change = forced.clone();
    spec_change["spec"]["containers"][0]["command"] = json!(["true"]);
    s.check(
        req("PUT", &format!("{PODS}/web"), Some(spec_change)),
        422,
        "spec: Forbidden: pod updates may not change fields",
    )
    .await;
    let mut invalid = forced.clone();
    invalid["metadata"]["labels"]["a"] = json!("b c");
    s.check(
        req("PUT", &format!("{PODS}/web"), Some(invalid)),
        422,
        "metadata.labels.a: Invalid value",
    )
    .await;
    s.check(
        req("PUT", &format!("{PODS}/ghost"), Some(pod("ghost"))),
        404,
        "not found",
    )
    .await;

    // Generation follows spec changes (nodes may change spec).
    let n = s.create("/api/v1/nodes", node("n1")).await;
    let mut cordoned = n.clone();
    cordoned["spec"] = json!({"unschedulable": true});
    let c = s
        .check(req("PUT", "/api/v1/nodes/n1", Some(cordoned)), 200, "")
        .await;
    assert_eq!(c["metadata"]["generation"], 2);
}

#[tokio::test]
async fn merge_patch() {
    let s = Server::start().await;
    let created = s.create(PODS, pod("web")).await;
    let path = format!("{PODS}/web");
    let p = s
        .check(
            req(
                "PATCH",
                &path,
                Some(json!({"metadata": {"labels": {"tier": "fe", "app": null}}})),
            ),
            200,
            "",
        )
        .await;
    assert_eq!(p["metadata"]["labels"], json!({"tier": "fe"}));
    assert!(rv(&p) > rv(&created));
    // A patch carrying a stale resourceVersion is refused.
    s.check(req("PATCH", &path, Some(json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"x": "1"}}}))), 409, "the object has been modified").await;
    // A current one applies.
    let p2 = s.check(req("PATCH", &path, Some(json!({"metadata": {"resourceVersion": p["metadata"]["resourceVersion"], "labels": {"x": "1"}}}))), 200, "").await;
    assert_eq!(p2["metadata"]["labels"]["x"], "1");
    // Unsupported patch types, invalid results, and renames.
    let mut json_patch = req("PATCH", &path, Some(json!([{"op": "add"}])));
    json_patch.content_type = Some("application/json-patch+json".into());
    s.check(json_patch, 415, "json patch is not supported")
        .await;
    s.check(
        req(
            "PATCH",
            &path,
            Some(json!({"spec": {"restartPolicy": "Sometimes"}})),
        ),
        422,
        "spec.restartPolicy: unknown variant",
    )
    .await;
    s.check(
        req("PATCH", &path, Some(json!({"metadata": {"name": "other"}}))),
        400,
        "metadata.name",
    )
    .await;
    s.check(
        req("PATCH", &format!("{PODS}/ghost"), Some(json!({}))),
        404,
        "not found",
    )
    .await;
    let mut smp = req(
        "PATCH",
        &path,
        Some(json!({"metadata": {"annotations": {"a": "b"}}})),
    );
    smp.content_type = Some("application/strategic-merge-patch+json".into());
    s.check(smp, 200, "\"annotations\":{\"a\":\"b\"}").await;
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let s = Server::start().await;
    let created = s.create(PODS, pod("web")).await;
    let path = format!("{PODS}/web");

    // /status replaces only the status: label changes in the body are ignored.
    let mut body = created.clone();
    body["metadata"]["labels"] = json!({"hacked": "yes"});
    body["status"] = json!({"phase": "Running", "podIP": "10.0.0.5"});
    let st = s
        .check(
            req("PUT", &format!("{path}/status"), Some(body)),
            200,
            "10.0.0.5",
        )
        .await;
    assert_eq!(st["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(st["status"]["phase"], "Running");

    // The main resource ignores status.
    let mut main = st.clone();
    main["status"] = json!({"phase": "Failed"});
    main["metadata"]["labels"]["tier"] = json!("fe");
    let m = s.check(req("PUT", &path, Some(main)), 200, "").await;
    assert_eq!(m["status"]["phase"], "Running");
    assert_eq!(m["metadata"]["labels"]["tier"], "fe");

    // Merge patch on /status, and its validation.
    let p = s
        .check(
            req(
                "PATCH",
                &format!("{path}/status"),
                Some(json!({"status": {"phase": "Succeeded"}, "spec": {"nodeName": "x"}})),
            ),
            200,
            "",
        )
        .await;
    assert_eq!(p["status"]["phase"], "Succeeded");
    assert_eq!(p["status"]["podIP"], "10.0.0.5");
    assert!(p["spec"].get("nodeName").is_none());
    s.check(
        req(
            "PATCH",
            &format!("{path}/status"),
            Some(json!({"status": {"phase": "Bogus"}})),
        ),
        422,
        "status.phase: unknown variant",
    )
    .await;
    s.check(
        req("GET", &format!("{path}/status"), None),
        200,
        "Succeeded",
    )
    .await;
    // Status with a stale resourceVersion.
    let mut stale = created.clone();
    stale["status"] = json!({"phase": "Failed"});
    s.check(
        req("PUT", &format!("{path}/status"), Some(stale)),
        409,
        "modified",
    )
    .await;
}

/// Pods are admitted by their namespace's pod security level: `default` without a label is
/// baseline (no host process runtime); labelled privileged, the same pod is created. A refused
/// pod names the level and the field, and nothing is stored.
#[tokio::test]
async fn pod_security_by_namespace_label() {
    let s = Server::start().await;
    let mut host = pod("host");
    host["spec"]["runtimeClassName"] = json!("process");
    host["spec"]["containers"][0]["securityContext"] =
        json!({"capabilities": {"add": ["SYS_TIME"]}});
    s.check(
        req("POST", "/api/v1/namespaces/default/pods", Some(host.clone())),
        403,
        r#"pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": spec.runtimeClassName: host process runtime"#,
    )
    .await;
    s.check(
        req("GET", "/api/v1/namespaces/default/pods/host", None),
        404,
        "",
    )
    .await;
    s.check(
        req(
            "PATCH",
            "/api/v1/namespaces/default",
            Some(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "superuser"}}})),
        ),
        422,
        "metadata.labels.pod-security.kubernetes.io/enforce: Unsupported value",
    )
    .await;
    s.check(
        req(
            "PATCH",
            "/api/v1/namespaces/default",
            Some(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
        ),
        200,
        "",
    )
    .await;
    s.create("/api/v1/namespaces/default/pods", host).await;
    s.stop().await;
}
