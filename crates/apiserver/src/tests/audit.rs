//! The audit log through the real server: a scripted session of every mutating verb, exec, log
//! reads and Secret reads, refusals included; each recorded exactly once, in order, with its
//! user, verb, object and code, and nothing else recorded.

use super::*;
use crate::audit_log::{AuditLog, Rotation};
use crate::authz::{Attributes, Authorizer, Decision};
use crate::StaticTokens;
use axum::body::Body;
use axum::routing::{get, post};
use futures_util::StreamExt;
use kumo_api::audit::Event;
use kumo_api::UserInfo;

const ALICE: &str = "alice-t0ken";

/// Alice may do anything but delete.
struct NoDeletesForAlice;

impl Authorizer for NoDeletesForAlice {
    fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.username == "alice" && a.verb == "delete" {
            Decision::Deny(String::new())
        } else {
            Decision::Allow
        }
    }
}

/// A server recording into `log`, with the admin's token and Alice's.
async fn audited_server(log: Arc<AuditLog>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let admin = UserInfo::new("admin", &[kumo_api::user::GROUP_MASTERS]);
    let alice = UserInfo::new("alice", &["team"]);
    let config = Config {
        authenticator: Arc::new(StaticTokens(vec![
            (TOKEN.to_string(), admin),
            (ALICE.to_string(), alice),
        ])),
        authorizer: Arc::new(NoDeletesForAlice),
        audit: Some(log),
        ..Config::new(Arc::new(MemStore::new()), vec![TOKEN.to_string()])
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    let server = Server {
        base,
        stop: Some(stop),
        task,
        client: super::plain_http_client(),
    };
    // Not recorded: a read of a namespace.
    server
        .check(req("GET", "/api/v1/namespaces/default", None), 200, "")
        .await;
    server
}

/// A fake agent: logs (one line, or a stream that never ends when followed) and exec (101).
async fn fake_agent() -> u16 {
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            get(|uri: http::Uri| async move {
                if uri.query().is_some_and(|q| q.contains("follow=true")) {
                    let lines = futures_util::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from("line\n"))
                    })
                    .chain(futures_util::stream::pending());
                    return http::Response::new(Body::from_stream(lines));
                }
                http::Response::new(Body::from("line\n"))
            }),
        )
        .route(
            "/exec/{ns}/{pod}/{container}",
            post(|| async {
                http::Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(header::CONNECTION, "Upgrade")
                    .header(header::UPGRADE, kumo_api::exec::PROTOCOL)
                    .body(Body::empty())
                    .unwrap()
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// What one request is expected to leave in the log: `None` for nothing.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    user: String,
    verb: String,
    uri: String,
    /// resource, subresource, namespace, name, group, version.
    object: Option<[String; 6]>,
    code: u16,
    stage: &'static str,
    reason: Option<String>,
}

fn line_of(e: &Event) -> Line {
    Line {
        user: e.user.username.clone(),
        verb: e.verb.clone(),
        uri: e.request_uri.clone(),
        object: e.object_ref.as_ref().map(|o| {
            [
                o.resource.clone(),
                o.subresource.clone(),
                o.namespace.clone(),
                o.name.clone(),
                o.api_group.clone(),
                o.api_version.clone(),
            ]
        }),
        code: e.response_status.code,
        stage: if e.stage == "ResponseStarted" {
            "ResponseStarted"
        } else {
            "ResponseComplete"
        },
        reason: e.annotations.get("kumo.dev/reason").cloned(),
    }
}

/// The session: requests sent one after the other, and the lines they are expected to leave.
struct Session<'a> {
    server: &'a Server,
    expected: Vec<Line>,
}

/// `resource/subresource` in `ns` named `name`, of the core group's v1 unless `group` says.
fn object(resource: &str, ns: &str, name: &str) -> Option<[String; 6]> {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let (group, version) = if resource == "datasets" {
        ("kumo.dev", "v1")
    } else {
        ("", "v1")
    };
    Some([resource, sub, ns, name, group, version].map(str::to_string))
}

impl Session<'_> {
    /// Sends `method path` as `token` with `headers` and `body`, and asserts the answer's code.
    async fn send(
        &mut self,
        token: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<Value>,
        code: u16,
    ) -> http::Response<Incoming> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.server.base, path));
        if let Some(t) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        if body.is_some() {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.server
                .client
                .request(builder.body(Full::new(body)).unwrap()),
        )
        .await
        .expect("the server answers in time")
        .expect("the request is sent");
        assert_eq!(response.status().as_u16(), code, "{method} {path}");
        response
    }

    /// A request that must be recorded once, as `verb` on `object` with the answer's `code`.
    #[allow(clippy::too_many_arguments)]
    async fn audited(
        &mut self,
        user: (&str, Option<&str>),
        method: &str,
        path: &str,
        body: Option<Value>,
        code: u16,
        verb: &str,
        object: Option<[String; 6]>,
    ) -> http::Response<Incoming> {
        let response = self.send(user.1, method, path, &[], body, code).await;
        self.expect(user.0, verb, path, object, code, "ResponseComplete", None);
        response
    }

    #[allow(clippy::too_many_arguments)]
    fn expect(
        &mut self,
        user: &str,
        verb: &str,
        path: &str,
        object: Option<[String; 6]>,
        code: u16,
        stage: &'static str,
        reason: Option<&str>,
    ) {
        self.expected.push(Line {
            user: user.into(),
            verb: verb.into(),
            uri: path.into(),
            object,
            code,
            stage,
            reason: reason.map(str::to_string),
        });
    }

    /// A request that must not be recorded.
    async fn quiet(&mut self, token: Option<&str>, path: &str, code: u16) {
        self.send(token, "GET", path, &[], None, code).await;
    }
}

#[tokio::test]
async fn a_session_is_recorded_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path, Rotation::default()).unwrap());
    let s = audited_server(log).await;
    let port = fake_agent().await;
    let mut x = Session {
        server: &s,
        expected: Vec::new(),
    };
    let admin = ("admin", Some(TOKEN));
    let alice = ("alice", Some(ALICE));
    let anonymous = ("system:anonymous", None);
    let ns = "/api/v1/namespaces";
    let a = &format!("{PODS}/a");

    // Creates, of a cluster-scoped and a namespaced kind; a generated name is recorded.
    x.audited(
        admin,
        "POST",
        ns,
        Some(json!({"metadata": {"name": "team"}})),
        201,
        "create",
        object("namespaces", "", "team"),
    )
    .await;
    x.audited(
        admin,
        "POST",
        "/api/v1/nodes",
        Some(json!({"metadata": {"name": "n1"},
        "status": {"daemonEndpoints": {"agentEndpoint": {"address": "127.0.0.1", "port": port}}}})),
        201,
        "create",
        object("nodes", "", "n1"),
    )
    .await;
    let created = x
        .audited(
            alice,
            "POST",
            PODS,
            Some(pod("a")),
            201,
            "create",
            object("pods", "default", "a"),
        )
        .await;
    let created: Value =
        serde_json::from_slice(&created.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let mut generated = pod("");
    generated["metadata"] = json!({"generateName": "gen-"});
    let r = x
        .send(Some(TOKEN), "POST", PODS, &[], Some(generated), 201)
        .await;
    let generated: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let gen_name = generated["metadata"]["name"].as_str().unwrap().to_string();
    assert!(gen_name.starts_with("gen-"));
    x.expect(
        "admin",
        "create",
        PODS,
        object("pods", "default", &gen_name),
        201,
        "ResponseComplete",
        None,
    );

    // Reads of other kinds are not recorded.
    x.quiet(Some(TOKEN), a, 200).await;
    x.quiet(Some(TOKEN), PODS, 200).await;
    x.quiet(Some(ALICE), "/api/v1/nodes", 200).await;
    x.quiet(None, PODS, 401).await;
    x.quiet(
        Some(TOKEN),
        &format!("{PODS}?watch=true&timeoutSeconds=1"),
        200,
    )
    .await;

    // Update, patch, the status subresource, a binding.
    let mut updated = created.clone();
    updated["metadata"]["labels"] = json!({"v": "2"});
    x.audited(
        admin,
        "PUT",
        a,
        Some(updated),
        200,
        "update",
        object("pods", "default", "a"),
    )
    .await;
    x.audited(
        alice,
        "PATCH",
        a,
        Some(json!({"metadata": {"labels": {"v": "3"}}})),
        200,
        "patch",
        object("pods", "default", "a"),
    )
    .await;
    x.audited(
        admin,
        "PATCH",
        &format!("{a}/status"),
        Some(json!({"status": {"message": "hi"}})),
        200,
        "patch",
        object("pods/status", "default", "a"),
    )
    .await;
    x.audited(
        admin,
        "POST",
        &format!("{a}/binding"),
        Some(json!({"target": {"name": "n1"}})),
        201,
        "create",
        object("pods/binding", "default", "a"),
    )
    .await;

    // Logs: a read recorded when complete, a followed one when it starts.
    x.audited(
        alice,
        "GET",
        &format!("{a}/log"),
        None,
        200,
        "get",
        object("pods/log", "default", "a"),
    )
    .await;
    let follow = format!("{a}/log?follow=true");
    let followed = x.send(Some(TOKEN), "GET", &follow, &[], None, 200).await;
    x.expect(
        "admin",
        "get",
        &follow,
        object("pods/log", "default", "a"),
        200,
        "ResponseStarted",
        None,
    );
    drop(followed);

    // Exec, with a reason; a bad reason is refused naming the header, and recorded.
    let exec = format!("{a}/exec?command=sh&stdin=false");
    let upgrade: &[(&str, &[u8])] = &[("connection", b"Upgrade"), ("upgrade", b"kumo-exec.v1")];
    let mut with_reason = upgrade.to_vec();
    with_reason.push(("kumo-audit-reason", "INC-42: 再起動".as_bytes()));
    x.send(Some(ALICE), "POST", &exec, &with_reason, None, 101)
        .await;
    x.expect(
        "alice",
        "create",
        &exec,
        object("pods/exec", "default", "a"),
        101,
        "ResponseStarted",
        Some("INC-42: 再起動"),
    );
    let mut bad = upgrade.to_vec();
    bad.push(("kumo-audit-reason", b"two\tcolumns"));
    let refused = x.send(Some(ALICE), "POST", &exec, &bad, None, 400).await;
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body)
        .contains("header Kumo-Audit-Reason: must not contain control characters"));
    x.expect(
        "alice",
        "create",
        &exec,
        object("pods/exec", "default", "a"),
        400,
        "ResponseComplete",
        None,
    );

    // Secrets: every read is recorded (get, list, watch), the watch when it starts.
    let secrets = "/api/v1/namespaces/default/secrets";
    x.audited(
        admin,
        "POST",
        secrets,
        Some(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})),
        201,
        "create",
        object("secrets", "default", "s"),
    )
    .await;
    x.audited(
        alice,
        "GET",
        &format!("{secrets}/s"),
        None,
        200,
        "get",
        object("secrets", "default", "s"),
    )
    .await;
    x.audited(
        alice,
        "GET",
        secrets,
        None,
        200,
        "list",
        object("secrets", "default", ""),
    )
    .await;
    let watch = format!("{secrets}?watch=true");
    drop(x.send(Some(ALICE), "GET", &watch, &[], None, 200).await);
    x.expect(
        "alice",
        "watch",
        &watch,
        object("secrets", "default", ""),
        200,
        "ResponseStarted",
        None,
    );
    x.audited(
        anonymous,
        "GET",
        &format!("{secrets}/s"),
        None,
        401,
        "get",
        object("secrets", "default", "s"),
    )
    .await;

    // Refusals: no credential, a forbidden verb, a missing object, a conflict, a bad path, a
    // data path.
    x.audited(
        anonymous,
        "DELETE",
        a,
        None,
        401,
        "delete",
        object("pods", "default", "a"),
    )
    .await;
    x.audited(
        alice,
        "DELETE",
        a,
        None,
        403,
        "delete",
        object("pods", "default", "a"),
    )
    .await;
    x.audited(
        admin,
        "DELETE",
        &format!("{PODS}/ghost"),
        None,
        404,
        "delete",
        object("pods", "default", "ghost"),
    )
    .await;
    x.audited(
        admin,
        "POST",
        PODS,
        Some(pod("a")),
        409,
        "create",
        object("pods", "default", "a"),
    )
    .await;
    x.audited(
        admin,
        "POST",
        "/nowhere",
        Some(json!({})),
        404,
        "create",
        None,
    )
    .await;
    x.audited(anonymous, "POST", "/nowhere", None, 401, "create", None)
        .await;
    x.audited(
        admin,
        "DELETE",
        "/apis/kumo.dev/v1/datasets/d",
        None,
        404,
        "delete",
        object("datasets", "", "d"),
    )
    .await;

    // And a delete that succeeds.
    x.audited(
        admin,
        "DELETE",
        a,
        None,
        200,
        "delete",
        object("pods", "default", "a"),
    )
    .await;

    let expected = std::mem::take(&mut x.expected);
    s.stop().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<Line> = events.iter().map(line_of).collect();
    assert_eq!(got.len(), expected.len(), "{text}");
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "line {i}");
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.audit_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "audit IDs are unique");
    for e in &events {
        assert_eq!(
            (e.kind.as_str(), e.api_version.as_str(), e.level.as_str()),
            ("Event", "audit.k8s.io/v1", "Metadata")
        );
        assert_eq!(e.source_ips, vec!["127.0.0.1".to_string()]);
        let received = chrono::DateTime::parse_from_rfc3339(&e.request_received_timestamp).unwrap();
        let stage = chrono::DateTime::parse_from_rfc3339(&e.stage_timestamp).unwrap();
        assert!(received <= stage, "{e:?}");
        // Microseconds, as Kubernetes' MicroTime.
        assert_eq!(
            e.stage_timestamp.len(),
            "2026-12-07T13:50:00.123456Z".len(),
            "{e:?}"
        );
        let failed = e.response_status.code >= 400;
        assert_eq!(!e.response_status.message.is_empty(), failed, "{e:?}");
        if e.user.username == "system:anonymous" {
            assert_eq!(e.user.groups, vec!["system:unauthenticated".to_string()]);
        }
    }
    let forbidden = events
        .iter()
        .find(|e| e.response_status.code == 403)
        .unwrap();
    assert!(forbidden
        .response_status
        .message
        .contains(r#"User "alice" cannot delete resource "pods""#));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn an_unwritable_log_refuses_what_it_cannot_record() {
    // /dev/full: it opens, and every write fails as on a full disk.
    let log = Arc::new(AuditLog::open("/dev/full", Rotation::default()).unwrap());
    let s = audited_server(log).await;
    s.check(
        req("POST", PODS, Some(pod("a"))),
        503,
        "the audit log cannot be written",
    )
    .await;
    s.check(
        req("GET", "/api/v1/namespaces/default/secrets", None),
        503,
        "the audit log cannot be written",
    )
    .await;
    // What is not recorded goes on.
    s.check(req("GET", PODS, None), 200, "").await;
    s.stop().await;
}
