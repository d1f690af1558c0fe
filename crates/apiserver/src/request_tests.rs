//! Request parsing as data: method, path, query and content type in, a request or a 4xx out.

use super::*;
use http::HeaderValue;

fn kind(plural: &str) -> Kind {
    Kind::lookup("", "v1", plural).unwrap()
}

fn s(v: &str) -> String {
    v.to_string()
}

fn check(
    method: Method,
    target: &str,
    content_type: Option<&str>,
    expected: Result<ApiRequest, (u16, &str)>,
) {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    let got = parse(&method, path, query, &headers);
    match (got, expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{method} {target}"),
        (Err(e), Err((code, msg))) => {
            assert_eq!(e.code(), code, "{method} {target}: {}", e.0.message);
            assert!(
                e.0.message.contains(msg),
                "{method} {target}: {}",
                e.0.message
            );
        }
        (got, want) => panic!("{method} {target}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn namespaced_paths() {
    let pods = kind("pods");
    check(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some("application/json"),
        Ok(ApiRequest::Create {
            kind: pods,
            ns: Some(s("default")),
        }),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/default/pods/web",
        None,
        Ok(ApiRequest::Get {
            kind: pods,
            ns: Some(s("default")),
            name: s("web"),
        }),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/default/pods/web/status",
        None,
        Ok(ApiRequest::Get {
            kind: pods,
            ns: Some(s("default")),
            name: s("web"),
        }),
    );
    check(
        Method::PUT,
        "/api/v1/namespaces/a/pods/web",
        None,
        Ok(ApiRequest::Update {
            kind: pods,
            ns: Some(s("a")),
            name: s("web"),
            subresource: None,
        }),
    );
    check(
        Method::PUT,
        "/api/v1/namespaces/a/pods/web/status",
        Some("application/json; charset=utf-8"),
        Ok(ApiRequest::Update {
            kind: pods,
            ns: Some(s("a")),
            name: s("web"),
            subresource: Some(Subresource::Status),
        }),
    );
    check(
        Method::PATCH,
        "/api/v1/namespaces/a/pods/web",
        Some("application/merge-patch+json"),
        Ok(ApiRequest::Patch {
            kind: pods,
            ns: Some(s("a")),
            name: s("web"),
            subresource: None,
        }),
    );
    check(
        Method::PATCH,
        "/api/v1/namespaces/a/pods/web/status",
        Some("application/strategic-merge-patch+json"),
        Ok(ApiRequest::Patch {
            kind: pods,
            ns: Some(s("a")),
            name: s("web"),
            subresource: Some(Subresource::Status),
        }),
    );
    check(
        Method::DELETE,
        "/api/v1/namespaces/a/pods/web?gracePeriodSeconds=0",
        None,
        Ok(ApiRequest::Delete {
            kind: pods,
            ns: Some(s("a")),
            name: s("web"),
            grace_period_seconds: Some(0),
        }),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/binding",
        None,
        Ok(ApiRequest::Bind {
            ns: s("a"),
            name: s("web"),
        }),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/serviceaccounts/default/token",
        Some("application/json"),
        Ok(ApiRequest::CreateToken {
            ns: s("a"),
            name: s("default"),
        }),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/token",
        None,
        Err((404, "could not find")),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/serviceaccounts/default/token",
        Some("text/plain"),
        Err((415, "application/json")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods/web/log?container=c&follow=true&tailLines=5",
        None,
        Ok(ApiRequest::Log {
            ns: s("a"),
            name: s("web"),
            container: Some(s("c")),
            follow: true,
            tail_lines: Some(5),
        }),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/events",
        None,
        Ok(ApiRequest::List {
            kind: kind("events"),
            ns: Some(s("a")),
            label_selector: LabelSelector::default(),
            field_selector: FieldSelector::default(),
        }),
    );
}

#[test]
fn lists_and_watches() {
    let pods = kind("pods");
    check(
        Method::GET,
        "/api/v1/pods?labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1",
        None,
        Ok(ApiRequest::List {
            kind: pods,
            ns: None,
            label_selector: LabelSelector::parse("app=web").unwrap(),
            field_selector: FieldSelector::parse("spec.nodeName=n1").unwrap(),
        }),
    );
    check(Method::GET, "/api/v1/namespaces/x/pods?watch=true&resourceVersion=12&allowWatchBookmarks=true&timeoutSeconds=60", None, Ok(ApiRequest::Watch {
        kind: pods, ns: Some(s("x")), label_selector: LabelSelector::default(), field_selector: FieldSelector::default(),
        resource_version: Some(12), bookmarks: true, timeout: Some(Duration::from_secs(60)),
    }));
    check(
        Method::GET,
        "/api/v1/nodes?watch=1&resourceVersion=0&timeoutSeconds=0",
        None,
        Ok(ApiRequest::Watch {
            kind: kind("nodes"),
            ns: None,
            label_selector: LabelSelector::default(),
            field_selector: FieldSelector::default(),
            resource_version: None,
            bookmarks: false,
            timeout: None,
        }),
    );
}

#[test]
fn cluster_scoped_paths() {
    let ns = kind("namespaces");
    let nodes = kind("nodes");
    check(
        Method::GET,
        "/api/v1/namespaces",
        None,
        Ok(ApiRequest::List {
            kind: ns,
            ns: None,
            label_selector: LabelSelector::default(),
            field_selector: FieldSelector::default(),
        }),
    );
    check(
        Method::POST,
        "/api/v1/namespaces",
        None,
        Ok(ApiRequest::Create { kind: ns, ns: None }),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/team-a",
        None,
        Ok(ApiRequest::Get {
            kind: ns,
            ns: None,
            name: s("team-a"),
        }),
    );
    check(
        Method::DELETE,
        "/api/v1/namespaces/team-a",
        None,
        Ok(ApiRequest::Delete {
            kind: ns,
            ns: None,
            name: s("team-a"),
            grace_period_seconds: None,
        }),
    );
    check(
        Method::PUT,
        "/api/v1/namespaces/team-a/status",
        None,
        Ok(ApiRequest::Update {
            kind: ns,
            ns: None,
            name: s("team-a"),
            subresource: Some(Subresource::Status),
        }),
    );
    check(
        Method::POST,
        "/api/v1/nodes",
        None,
        Ok(ApiRequest::Create {
            kind: nodes,
            ns: None,
        }),
    );
    check(
        Method::GET,
        "/api/v1/nodes/n1/",
        None,
        Ok(ApiRequest::Get {
            kind: nodes,
            ns: None,
            name: s("n1"),
        }),
    );
    check(
        Method::PATCH,
        "/api/v1/nodes/n1/status",
        Some("application/merge-patch+json"),
        Ok(ApiRequest::Patch {
            kind: nodes,
            ns: None,
            name: s("n1"),
            subresource: Some(Subresource::Status),
        }),
    );
}

#[test]
fn rejections() {
    let nf = Err((404, "could not find"));
    for path in [
        "/",
        "/api",
        "/api/v1",
        "/api/v2/pods",
        "/apis/kumo.dev/v1/pods",
        "/api/v1/widgets",
        "/api/v1/pods/web",
        "/api/v1/namespaces/a/nodes",
        "/api/v1/namespaces/a/pods/web/attach",
        "/api/v1/namespaces/a/pods/web/log/x",
        "/api/v1/namespaces/a/events/e/status",
        "/api/v1/nodes/n1/log",
        "/api/v1//pods",
        "api/v1/pods",
        "/apis/kumo.dev/v1/namespaces/x/status",
    ] {
        check(Method::GET, path, None, nf.clone());
    }
    // exec needs a command and an upgrade.
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/exec",
        None,
        Err((400, "command: Required value")),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/exec?command=ls",
        None,
        Err((400, "exec needs an upgrade to kumo-exec.v1")),
    );
    check(
        Method::DELETE,
        "/api/v1/namespaces/a/pods/web/exec?command=ls",
        None,
        Err((405, "")),
    );
    check(
        Method::POST,
        "/api/v1/pods",
        None,
        Err((405, "does not allow method POST")),
    );
    check(
        Method::DELETE,
        "/api/v1/namespaces/a/pods",
        None,
        Err((405, "")),
    );
    check(
        Method::DELETE,
        "/api/v1/namespaces/a/pods/web/status",
        None,
        Err((405, "")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods/web/binding",
        None,
        Err((405, "")),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/log",
        None,
        Err((405, "")),
    );
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods",
        Some("application/yaml"),
        Err((415, "application/yaml")),
    );
    check(
        Method::PATCH,
        "/api/v1/namespaces/a/pods/web",
        Some("application/json-patch+json"),
        Err((415, "json patch is not supported")),
    );
    check(
        Method::PATCH,
        "/api/v1/namespaces/a/pods/web",
        None,
        Err((415, "merge-patch")),
    );
    check(
        Method::PATCH,
        "/api/v1/namespaces/a/pods/web",
        Some("application/json"),
        Err((415, "unsupported patch type")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods?watch=maybe",
        None,
        Err((400, "watch: invalid value")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods/web?watch=true",
        None,
        Err((400, "watch:")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods?labelSelector=a%20in%20b",
        None,
        Err((400, "labelSelector")),
    );
    check(
        Method::GET,
        "/api/v1/namespaces/a/pods?nope=1",
        None,
        Err((400, "unknown query parameter \"nope\"")),
    );
}

#[test]
fn node_credentials_and_tokens() {
    check(
        Method::POST,
        "/api/v1/nodes/n1/credential",
        None,
        Ok(ApiRequest::NodeCredential { name: s("n1") }),
    );
    check(
        Method::GET,
        "/api/v1/nodes/n1/credential",
        None,
        Err((405, "")),
    );
    // Only nodes have credentials.
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/credential",
        None,
        Err((404, "")),
    );
    let tokens = Kind::lookup("auth.kumo.dev", "v1", "tokens").unwrap();
    check(
        Method::POST,
        "/apis/auth.kumo.dev/v1/tokens",
        Some("application/json"),
        Ok(ApiRequest::Create {
            kind: tokens,
            ns: None,
        }),
    );
    let admin = kumo_api::UserInfo::new("admin", &[]);
    let a =
        crate::authz::Attributes::of_request(&admin, &ApiRequest::NodeCredential { name: s("n1") });
    assert_eq!(
        (
            a.verb,
            a.resource_path().as_str(),
            a.name.as_str(),
            a.namespace.as_str()
        ),
        ("create", "nodes/credential", "n1", "")
    );
}

#[test]
fn access_review_paths() {
    let review = |self_review| Ok(ApiRequest::AccessReview { self_review });
    let base = "/apis/authorization.k8s.io/v1";
    let json = Some("application/json");
    check(
        Method::POST,
        &format!("{base}/selfsubjectaccessreviews"),
        json,
        review(true),
    );
    check(
        Method::POST,
        &format!("{base}/subjectaccessreviews/"),
        None,
        review(false),
    );
    check(
        Method::GET,
        &format!("{base}/subjectaccessreviews"),
        None,
        Err((405, "")),
    );
    check(
        Method::POST,
        &format!("{base}/selfsubjectaccessreviews"),
        Some("text/plain"),
        Err((415, "unsupported media type")),
    );
    check(
        Method::POST,
        &format!("{base}/localsubjectaccessreviews"),
        json,
        Err((404, "")),
    );
    // The RBAC kinds are served as any other.
    check(
        Method::GET,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings/b",
        None,
        Ok(ApiRequest::Get {
            kind: Kind::lookup("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap(),
            ns: Some(s("a")),
            name: s("b"),
        }),
    );
}

#[test]
fn node_serving_certificates() {
    let path = "/api/v1/nodes/n1/servingcertificate";
    check(
        Method::POST,
        path,
        Some("application/json"),
        Ok(ApiRequest::NodeServingCertificate { name: s("n1") }),
    );
    check(Method::GET, path, None, Err((405, "")));
    check(Method::POST, path, Some("application/yaml"), Err((415, "")));
    // Only nodes have it.
    check(
        Method::POST,
        "/api/v1/namespaces/a/pods/web/servingcertificate",
        Some("application/json"),
        Err((404, "")),
    );
}
