//! RBAC through the real API: users bound to each built-in role, in and out of their
//! namespace, for every verb and subresource (a refusal is a 403, anything else means the
//! authorizer let the request through); the Node authorizer and NodeRestriction; access reviews.

use super::{req, rv, Req, Server};
use http::{header, Request};
use http_body_util::Full;
use kumo_api::UserInfo;
use kumo_store::MemStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

pub(super) fn users() -> Vec<(String, UserInfo)> {
    let u =
        |token: &str, name: &str, groups: &[&str]| (token.to_string(), UserInfo::new(name, groups));
    vec![
        u("admin-a", "ann", &[]),
        u("edit-a", "ed", &[]),
        u("view-a", "vi", &[]),
        u("ml-a", "mia", &["ml-team"]),
        u("dev-a", "dev", &["app-team"]),
        u("nobody", "nobody", &[]),
        u("ops-view", "ops", &["ops-team"]),
        u("node-1", "system:node:n1", &["system:nodes"]),
        u("node-2", "system:node:n2", &["system:nodes"]),
        u("join", "system:bootstrap:abc123", &["system:bootstrappers"]),
    ]
}

pub(super) fn as_user(token: &str, mut r: Req) -> Req {
    r.token = Some(token.to_string());
    r
}

/// The status of a request, without waiting for a streamed body (watches, logs).
async fn status_of(server: &Server, r: Req, upgrade: bool) -> u16 {
    let mut b = Request::builder()
        .method(r.method)
        .uri(format!("{}{}", server.base, r.path));
    if let Some(t) = r.token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = r.content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    if upgrade {
        b = b
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, kumo_api::exec::PROTOCOL);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        server.client.request(b.body(Full::new(r.body)).unwrap()),
    )
    .await
    .expect("the server answers in time")
    .expect("the request is sent");
    response.status().as_u16()
}

fn binding(ns: Option<&str>, name: &str, role: &str, subject: Value) -> Value {
    let mut b = json!({
        "metadata": {"name": name},
        "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    });
    if let Some(ns) = ns {
        b["metadata"]["namespace"] = json!(ns);
    }
    b
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "name": name})
}

/// Waits (bounded) until the authorizer's watch has brought the policy that lets `token` do
/// `verb resource` in `ns`.
async fn wait_allowed(server: &Server, token: &str, verb: &str, resource: &str, ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let review = json!({"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns, "group": if matches!(resource, "mltasks" | "datasets") {"kumo.dev"} else {""}}}});
        let r = as_user(
            token,
            req(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Some(review),
            ),
        );
        let answer = server.check(r, 201, "").await;
        if answer["status"]["allowed"] == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{token} is not allowed {verb} {resource} in {ns:?} within 5 s: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn setup() -> Server {
    let server = Server::with_rbac(Arc::new(MemStore::new()), users()).await;
    for ns in ["team-a", "team-b"] {
        server
            .create(
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await;
    }
    let rb = format!("{RBAC}/namespaces/team-a/rolebindings");
    for (name, role, subject) in [
        ("ann-admin", "admin", user("ann")),
        ("ed-edit", "edit", user("ed")),
        ("vi-view", "view", user("vi")),
        (
            "ml",
            "ml-engineer",
            json!({"kind": "Group", "name": "ml-team"}),
        ),
        (
            "apps",
            "app-developer",
            json!({"kind": "Group", "name": "app-team"}),
        ),
    ] {
        server
            .create(&rb, binding(Some("team-a"), name, role, subject))
            .await;
    }
    server
        .create(
            &format!("{RBAC}/clusterrolebindings"),
            binding(
                None,
                "ml-datasets",
                "ml-engineer-datasets",
                json!({"kind": "Group", "name": "ml-team"}),
            ),
        )
        .await;
    wait_allowed(&server, "admin-a", "delete", "pods", "team-a").await;
    wait_allowed(&server, "edit-a", "get", "pods", "team-a").await;
    wait_allowed(&server, "view-a", "get", "pods", "team-a").await;
    wait_allowed(&server, "ml-a", "create", "mltasks", "team-a").await;
    wait_allowed(&server, "dev-a", "get", "pods", "team-a").await;
    wait_allowed(&server, "ml-a", "get", "datasets", "").await;
    server
}

/// Requests in namespace `{ns}`, and who may make them there: a for admin, e edit, v view,
/// m ml-engineer, d app-developer.
const NAMESPACED: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/namespaces/{ns}/pods/p", "aevmd"),
    ("GET", "/api/v1/namespaces/{ns}/pods", "aevmd"),
    ("WATCH", "/api/v1/namespaces/{ns}/pods?watch=true", "aevmd"),
    ("POST", "/api/v1/namespaces/{ns}/pods", "ae"),
    ("PUT", "/api/v1/namespaces/{ns}/pods/p", "ae"),
    ("PATCH", "/api/v1/namespaces/{ns}/pods/p", "ae"),
    ("DELETE", "/api/v1/namespaces/{ns}/pods/gone", "ae"),
    ("PUT", "/api/v1/namespaces/{ns}/pods/p/status", ""),
    ("POST", "/api/v1/namespaces/{ns}/pods/p/binding", ""),
    ("GET", "/api/v1/namespaces/{ns}/pods/p/log", "aevmd"),
    (
        "EXEC",
        "/api/v1/namespaces/{ns}/pods/p/exec?command=sh",
        "ae",
    ),
    ("GET", "/api/v1/namespaces/{ns}/secrets/s", "ae"),
    ("GET", "/api/v1/namespaces/{ns}/secrets", "ae"),
    ("POST", "/api/v1/namespaces/{ns}/secrets", "ae"),
    ("GET", "/api/v1/namespaces/{ns}/events", "aevmd"),
    ("POST", "/api/v1/namespaces/{ns}/events", ""),
    ("GET", "/apis/kumo.dev/v1/namespaces/{ns}/mltasks/t", "aevm"),
    ("POST", "/apis/kumo.dev/v1/namespaces/{ns}/mltasks", "aem"),
    (
        "DELETE",
        "/apis/kumo.dev/v1/namespaces/{ns}/mltasks/gone",
        "aem",
    ),
    (
        "PUT",
        "/apis/kumo.dev/v1/namespaces/{ns}/mltasks/t/status",
        "",
    ),
    (
        "GET",
        "/apis/kumo.dev/v1/namespaces/{ns}/mltasks/t/output",
        "aevm",
    ),
    (
        "PUT",
        "/apis/kumo.dev/v1/namespaces/{ns}/mltasks/t/output/0",
        "",
    ),
    ("GET", "/apis/kumo.dev/v1/namespaces/{ns}/apps/web", "aevd"),
    ("POST", "/apis/kumo.dev/v1/namespaces/{ns}/apps", "aed"),
    ("PUT", "/apis/kumo.dev/v1/namespaces/{ns}/apps/web", "aed"),
    ("PATCH", "/apis/kumo.dev/v1/namespaces/{ns}/apps/web", "aed"),
    (
        "DELETE",
        "/apis/kumo.dev/v1/namespaces/{ns}/apps/gone",
        "aed",
    ),
    ("GET", "/apis/kumo.dev/v1/namespaces/{ns}/releases", "aevd"),
    ("POST", "/apis/kumo.dev/v1/namespaces/{ns}/releases", "ae"),
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        "a",
    ),
    (
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
        "a",
    ),
];

/// Cluster-scoped requests, and who may make them (the same letters).
const CLUSTER: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/nodes", ""),
    ("POST", "/api/v1/nodes", ""),
    ("PATCH", "/api/v1/namespaces/team-a", ""),
    ("GET", "/apis/kumo.dev/v1/queues", "m"),
    ("POST", "/apis/kumo.dev/v1/queues", ""),
    ("GET", "/apis/kumo.dev/v1/datasets", "m"),
    ("GET", "/apis/kumo.dev/v1/datasets/mnist", "m"),
    ("PUT", "/apis/kumo.dev/v1/datasets/mnist", "m"),
    ("DELETE", "/apis/kumo.dev/v1/datasets/mnist", ""),
    ("GET", "/apis/kumo.dev/v1/blobs/sha256:00", "m"),
    (
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "",
    ),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", ""),
];

async fn check_matrix(server: &Server, rows: &[(&str, &str, &str)], ns: &str, in_scope: bool) {
    let who = [
        ('a', "admin-a"),
        ('e', "edit-a"),
        ('v', "view-a"),
        ('m', "ml-a"),
        ('d', "dev-a"),
        ('-', "nobody"),
    ];
    for (method, path, may) in rows {
        let path = path.replace("{ns}", ns);
        for (letter, token) in who {
            let (m, upgrade) = match *method {
                "WATCH" => ("GET", false),
                "EXEC" => ("POST", true),
                m => (m, false),
            };
            let body = matches!(m, "POST" | "PUT" | "PATCH").then(|| json!({}));
            let r = as_user(token, req(m, &path, body));
            let got = status_of(server, r, upgrade).await;
            let allowed = in_scope && may.contains(letter);
            assert_eq!(
                got != 403,
                allowed,
                "{token} {method} {path}: got {got}, expected {}",
                if allowed { "not 403" } else { "403" }
            );
        }
    }
}

#[tokio::test]
async fn built_in_roles_grant_in_their_namespace_only() {
    let server = setup().await;
    check_matrix(&server, NAMESPACED, "team-a", true).await;
    check_matrix(&server, NAMESPACED, "team-b", false).await;
    check_matrix(&server, CLUSTER, "", true).await;
    // The admin (system:masters) may do everything, the namespace label included.
    server
        .check(
            req(
                "PATCH",
                "/api/v1/namespaces/team-a",
                Some(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
            ),
            200,
            "privileged",
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_refusal_names_user_verb_resource_namespace_and_what_would_allow_it() {
    let server = setup().await;
    server
        .check(
            as_user("view-a", req("GET", "/api/v1/namespaces/team-a/secrets/s", None)),
            403,
            r#"secrets \"s\" is forbidden: User \"vi\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team-a\": no RBAC policy matched; a RoleBinding in namespace \"team-a\" or a ClusterRoleBinding of a role with verb \"get\" on resource \"secrets\""#,
        )
        .await;
    // A binding removed takes its grant with it.
    server
        .check(
            req(
                "DELETE",
                &format!("{RBAC}/namespaces/team-a/rolebindings/vi-view"),
                None,
            ),
            200,
            "",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = as_user("view-a", req("GET", "/api/v1/namespaces/team-a/pods", None));
        if server.call(r).await.0.as_u16() == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed binding still grants"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn bindings_are_validated_and_keep_their_role_ref() {
    let server = setup().await;
    let path = format!("{RBAC}/namespaces/team-a/rolebindings");
    server
        .check(
            req("POST", &path, Some(json!({"metadata": {"name": "x"}, "subjects": [{"kind": "Robot", "name": "r"}], "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}))),
            422,
            r#"subjects[0].kind: Unsupported value: \"Robot\""#,
        )
        .await;
    let mut b = server
        .check(req("GET", &format!("{path}/ed-edit"), None), 200, "")
        .await;
    b["roleRef"]["name"] = json!("admin");
    server
        .check(
            req("PUT", &format!("{path}/ed-edit"), Some(b)),
            422,
            "roleRef: Invalid value: cannot change roleRef",
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn the_built_in_policy_is_reconciled_at_every_start() {
    let store: Arc<dyn kumo_store::Store> = Arc::new(MemStore::new());
    let server = Server::with_rbac(Arc::clone(&store), users()).await;
    let root = format!("{RBAC}/clusterroles/cluster-admin");
    let untouched = server.check(req("GET", &root, None), 200, "").await;
    let path = format!("{RBAC}/clusterroles/view");
    let mut role = server
        .check(req("GET", &path, None), 200, "rbac-defaults")
        .await;
    role["rules"] = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    server
        .check(req("PUT", &path, Some(role)), 200, "secrets")
        .await;
    let basic = format!("{RBAC}/clusterrolebindings/system:basic-user");
    server.check(req("DELETE", &basic, None), 200, "").await;
    // A built-in role its owner opted out of reconciling is left alone.
    let edit = format!("{RBAC}/clusterroles/edit");
    let mut role = server.check(req("GET", &edit, None), 200, "").await;
    role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
    role["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    server.check(req("PUT", &edit, Some(role)), 200, "").await;
    server.stop().await;

    let server = Server::with_rbac(store, users()).await;
    let role = server.check(req("GET", &path, None), 200, "pods/log").await;
    assert!(!role.to_string().contains("\"secrets\""), "{role}");
    server
        .check(req("GET", &basic, None), 200, "system:authenticated")
        .await;
    let role = server.check(req("GET", &edit, None), 200, "").await;
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(1), "{role}");
    // What did not change is not written again.
    let again = server.check(req("GET", &root, None), 200, "").await;
    assert_eq!(rv(&again), rv(&untouched));
    server.stop().await;
}

#[tokio::test]
async fn access_reviews_answer_for_oneself_and_for_others() {
    let server = setup().await;
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let ask = |verb: &str, resource: &str, sub: &str, ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub, "namespace": ns}}})
    };
    let cases = [
        ("view-a", ask("get", "pods", "log", "team-a"), true),
        ("view-a", ask("create", "pods", "exec", "team-a"), false),
        ("edit-a", ask("create", "pods", "exec", "team-a"), true),
        ("edit-a", ask("create", "pods", "exec", "team-b"), false),
        ("nobody", ask("list", "pods", "", "team-a"), false),
    ];
    for (token, body, allowed) in cases {
        let answer = server
            .check(
                as_user(token, req("POST", ssar, Some(body))),
                201,
                "SelfSubjectAccessReview",
            )
            .await;
        assert_eq!(
            answer["status"]["allowed"],
            json!(allowed),
            "{token}: {answer}"
        );
    }
    let mut about_ed = ask("create", "pods", "exec", "team-a");
    about_ed["kind"] = json!("SubjectAccessReview");
    about_ed["spec"]["user"] = json!("ed");
    // Only who may create SubjectAccessReviews (cluster-admin) asks about someone else.
    server
        .check(
            as_user("admin-a", req("POST", sar, Some(about_ed.clone()))),
            403,
            "subjectaccessreviews",
        )
        .await;
    let answer = server
        .check(req("POST", sar, Some(about_ed)), 201, "")
        .await;
    assert_eq!(answer["status"]["allowed"], json!(true), "{answer}");
    server
        .check(
            req(
                "POST",
                sar,
                Some(json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})),
            ),
            400,
            "spec.user: Invalid value: at least one of user or group must be specified",
        )
        .await;
    server
        .check(
            as_user("nobody", req("POST", ssar, Some(json!({"spec": {"resourceAttributes": {"verb": "fly", "resource": "pods"}}})))),
            400,
            "spec.resourceAttributes.verb: Unsupported value: \\\"fly\\\"",
        )
        .await;
    server
        .check(as_user("nobody", req("GET", ssar, None)), 405, "")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_namespace_admin_grants_only_what_it_holds() {
    let server = setup().await;
    let rb = format!("{RBAC}/namespaces/team-a/rolebindings");
    let roles = format!("{RBAC}/namespaces/team-a/roles");
    let ann =
        |method: &str, path: &str, body: Option<Value>| as_user("admin-a", req(method, path, body));
    let not_held = "is attempting to grant RBAC permissions not currently held";
    let role = |rules: Value| json!({"metadata": {"name": "pod-reader"}, "rules": rules});
    let cases: Vec<(Req, u16, &str)> = vec![
        (
            ann(
                "POST",
                &rb,
                Some(binding(
                    Some("team-a"),
                    "newbie-edit",
                    "edit",
                    user("newbie"),
                )),
            ),
            201,
            "",
        ),
        (
            ann(
                "POST",
                &rb,
                Some(binding(
                    Some("team-a"),
                    "newbie-ml",
                    "ml-engineer",
                    user("newbie"),
                )),
            ),
            201,
            "",
        ),
        (
            ann(
                "POST",
                &rb,
                Some(binding(
                    Some("team-a"),
                    "newbie-root",
                    "cluster-admin",
                    user("newbie"),
                )),
            ),
            403,
            r#"rolebindings.rbac.authorization.k8s.io \"newbie-root\" is forbidden: user \"ann\" is attempting to grant RBAC permissions not currently held: verb \"*\" on resource \"*\" in API group \"*\""#,
        ),
        (
            ann(
                "POST",
                &format!("{RBAC}/namespaces/team-b/rolebindings"),
                Some(binding(Some("team-b"), "x", "view", user("newbie"))),
            ),
            403,
            "cannot create resource \\\"rolebindings\\\"",
        ),
        (
            ann(
                "POST",
                &roles,
                Some(role(
                    json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]),
                )),
            ),
            201,
            "",
        ),
        (
            ann(
                "PATCH",
                &format!("{roles}/pod-reader"),
                Some(
                    json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]}),
                ),
            ),
            403,
            r#"verb \"*\" on resource \"secrets\" in API group \"\""#,
        ),
        (
            ann(
                "POST",
                &roles,
                Some(
                    json!({"metadata": {"name": "node-reader"}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]}),
                ),
            ),
            403,
            not_held,
        ),
        (
            ann(
                "POST",
                &rb,
                Some(
                    json!({"metadata": {"name": "ghost"}, "subjects": [user("newbie")], "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ghost"}}),
                ),
            ),
            403,
            "Role \\\"ghost\\\" not found",
        ),
        // Only who may update Namespace objects (cluster-admin) labels one privileged.
        (
            ann(
                "PATCH",
                "/api/v1/namespaces/team-a",
                Some(
                    json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
                ),
            ),
            403,
            r#"User \"ann\" cannot patch resource \"namespaces\""#,
        ),
        // The admin (system:masters) may grant anything.
        (
            req(
                "POST",
                &rb,
                Some(binding(
                    Some("team-a"),
                    "root",
                    "cluster-admin",
                    user("newbie"),
                )),
            ),
            201,
            "",
        ),
    ];
    for (r, status, message) in cases {
        server.check(r, status, message).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_cluster_role_binding_grants_in_every_namespace_and_at_the_cluster_scope() {
    let server = setup().await;
    server
        .create(
            &format!("{RBAC}/clusterrolebindings"),
            binding(
                None,
                "ops-view",
                "view",
                json!({"kind": "Group", "name": "ops-team"}),
            ),
        )
        .await;
    wait_allowed(&server, "ops-view", "get", "pods", "team-b").await;
    for (method, path, allowed) in [
        ("GET", "/api/v1/namespaces/team-b/pods/p", true),
        ("GET", "/api/v1/pods", true),
        ("GET", "/api/v1/namespaces", true),
        ("GET", "/apis/kumo.dev/v1/datasets", true),
        ("GET", "/apis/kumo.dev/v1/mltasks", true),
        ("GET", "/api/v1/namespaces/team-b/secrets", false),
        ("GET", "/api/v1/nodes", false),
        ("DELETE", "/api/v1/namespaces/team-b/pods/p", false),
        ("PUT", "/apis/kumo.dev/v1/datasets/mnist", false),
    ] {
        let body = (method == "PUT").then(|| json!({}));
        let got = status_of(&server, as_user("ops-view", req(method, path, body)), false).await;
        assert_eq!(got != 403, allowed, "{method} {path}: {got}");
    }
    server.stop().await;
}
