//! Service accounts: the `default` one of every namespace, a pod's account checked at creation,
//! TokenRequests, and the tokens they issue authenticating as the account until the account or
//! the bound pod goes.

use super::*;
use crate::authz::{Attributes, Authorizer, Decision};
use crate::ServiceAccounts;
use kumo_api::UserInfo;
use kumo_store::Store;
use std::sync::Mutex;

const ACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";

/// Allows everything and remembers who asked, so a test can see whom a token authenticated.
#[derive(Default)]
struct Users(Mutex<Vec<UserInfo>>);

impl Authorizer for Users {
    fn authorize(&self, a: &Attributes) -> Decision {
        self.0.lock().unwrap().push(a.user.clone());
        Decision::Allow
    }
}

impl Users {
    fn last(&self) -> UserInfo {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

/// A server whose authenticator chains the admin token and service-account tokens signed with
/// `key`, over `store`.
/// The token of node `n1`'s credential in the servers of these tests.
const NODE_TOKEN: &str = "node-n1-token";

async fn start_with(store: Arc<dyn Store>, key: &str) -> (Server, Arc<Users>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sa = Arc::new(ServiceAccounts::new(key).unwrap());
    let users = Arc::new(Users::default());
    let config = Config {
        authenticator: Arc::new(crate::Chain(vec![
            Arc::new(crate::StaticTokens::admins([TOKEN.to_string()])),
            Arc::new(crate::StaticTokens(vec![(
                NODE_TOKEN.to_string(),
                UserInfo::new("system:node:n1", &[kumo_api::user::GROUP_NODES]),
            )])),
            sa.clone(),
        ])),
        authorizer: users.clone(),
        service_accounts: Some(sa),
        ..Config::new(store, vec![TOKEN.to_string()])
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
    server
        .check(req("GET", &format!("{ACCOUNTS}/default"), None), 200, "")
        .await;
    (server, users)
}

async fn start() -> (Server, Arc<Users>) {
    start_with(
        Arc::new(MemStore::new()),
        &ServiceAccounts::generate_key().unwrap(),
    )
    .await
}

fn token_request(spec: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

fn bound_to(name: &str, uid: &str) -> Value {
    token_request(
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}}),
    )
}

/// Asks a token of `account` in `default`, asserting the status and message.
async fn request(s: &Server, account: &str, body: Value, status: u16, message: &str) -> Value {
    s.check(
        req("POST", &format!("{ACCOUNTS}/{account}/token"), Some(body)),
        status,
        message,
    )
    .await
}

fn with_token(mut r: Req, token: &str) -> Req {
    r.token = Some(token.to_string());
    r
}

fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_namespace_has_a_default_account() {
    // A namespace stored before service accounts existed gets its account at the next start.
    let store = Arc::new(MemStore::new());
    store
        .create(
            "/registry/core/namespaces/old",
            br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"old","uid":"u"}}"#
                .to_vec(),
        )
        .await
        .unwrap();
    let (s, _) = start_with(store, &ServiceAccounts::generate_key().unwrap()).await;
    s.check(
        req(
            "GET",
            "/api/v1/namespaces/old/serviceaccounts/default",
            None,
        ),
        200,
        r#""kind":"ServiceAccount""#,
    )
    .await;
    s.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    )
    .await;
    let list = s
        .check(
            req("GET", "/api/v1/namespaces/team-a/serviceaccounts", None),
            200,
            "ServiceAccountList",
        )
        .await;
    assert_eq!(list["items"][0]["metadata"]["name"], "default");
    // Deleting the namespace takes its account with it.
    s.check(req("DELETE", "/api/v1/namespaces/team-a", None), 200, "")
        .await;
    s.check(
        req("GET", "/api/v1/namespaces/team-a", None),
        404,
        "not found",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_deleted_default_account_comes_back() {
    let (s, _) = start().await;
    let old = s
        .check(req("GET", &format!("{ACCOUNTS}/default"), None), 200, "")
        .await;
    s.check(req("DELETE", &format!("{ACCOUNTS}/default"), None), 200, "")
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = s
            .call(req("GET", &format!("{ACCOUNTS}/default"), None))
            .await;
        if code == 200 {
            let new: Value = serde_json::from_str(&body).unwrap();
            assert_ne!(uid(&new), uid(&old), "a new account");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another account stays deleted.
    s.create(
        ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci"}}),
    )
    .await;
    s.check(req("DELETE", &format!("{ACCOUNTS}/ci"), None), 200, "")
        .await;
    s.create(PODS, pod("marker")).await;
    s.check(req("GET", &format!("{ACCOUNTS}/ci"), None), 404, "")
        .await;
    s.stop().await;
}

#[tokio::test]
async fn pods_run_as_an_existing_account() {
    let (s, _) = start().await;
    let created = s.create(PODS, pod("web")).await;
    assert_eq!(created["spec"]["serviceAccountName"], "default");
    assert!(created["spec"]
        .get("automountServiceAccountToken")
        .is_none());

    let mut robot = pod("robot");
    robot["spec"]["serviceAccountName"] = json!("robot");
    s.check(
        req("POST", PODS, Some(robot.clone())),
        403,
        r#"pods \"robot\" is forbidden: error looking up service account default/robot: serviceaccount \"robot\" not found"#,
    )
    .await;
    s.check(req("GET", &format!("{PODS}/robot"), None), 404, "")
        .await;

    // An account that turns automounting off turns it off for its pods that do not say.
    s.create(
        ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}, "automountServiceAccountToken": false}),
    )
    .await;
    let created = s.create(PODS, robot.clone()).await;
    assert_eq!(created["spec"]["automountServiceAccountToken"], false);
    robot["metadata"]["name"] = json!("robot2");
    robot["spec"]["automountServiceAccountToken"] = json!(true);
    let created = s.create(PODS, robot).await;
    assert_eq!(created["spec"]["automountServiceAccountToken"], true);

    let mut bad = pod("bad");
    bad["spec"]["serviceAccountName"] = json!("Not_A_Name");
    s.check(req("POST", PODS, Some(bad)), 422, "spec.serviceAccountName")
        .await;
    s.stop().await;
}

#[tokio::test]
async fn token_requests_are_checked() {
    let (s, _) = start().await;
    let web = s.create(PODS, pod("web")).await;
    let web_uid = uid(&web);
    for (account, body, status, message) in [
        (
            "default",
            token_request(json!({"expirationSeconds": 60})),
            422,
            "spec.expirationSeconds: Invalid value: 60: must be between 600 and 86400 seconds",
        ),
        (
            "default",
            token_request(json!({"expirationSeconds": "soon"})),
            422,
            "spec.expirationSeconds",
        ),
        (
            "default",
            json!({"apiVersion": "v1", "kind": "TokenRequest"}),
            400,
            "apiVersion",
        ),
        (
            "nobody",
            token_request(json!({})),
            404,
            r#"serviceaccounts \"nobody\" not found"#,
        ),
        (
            "default",
            bound_to("gone", ""),
            404,
            r#"pods \"gone\" not found"#,
        ),
        (
            "default",
            bound_to("web", "0000"),
            409,
            "does not match the UID in record",
        ),
        (
            "default",
            token_request(json!({"boundObjectRef": {"kind": "Secret", "name": "web"}})),
            422,
            "spec.boundObjectRef.kind",
        ),
    ] {
        request(&s, account, body, status, message).await;
    }
    s.create(
        ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other"}}),
    )
    .await;
    request(
        &s,
        "other",
        bound_to("web", &web_uid),
        400,
        r#"which runs as service account \"default\""#,
    )
    .await;

    let before = chrono::Utc::now().timestamp();
    let answer = request(
        &s,
        "default",
        bound_to("web", &web_uid),
        201,
        "TokenRequest",
    )
    .await;
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(answer["status"]["expirationTimestamp"].clone()).unwrap();
    let lifetime = expires.timestamp() - before;
    assert!((3599..=3602).contains(&lifetime), "{lifetime}");
    assert_eq!(
        answer["status"]["token"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn a_token_authenticates_as_its_account_until_its_pod_is_gone() {
    let (s, users) = start().await;
    let web = s.create(PODS, pod("web")).await;
    let answer = request(&s, "default", bound_to("web", &uid(&web)), 201, "").await;
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    let account = s
        .check(req("GET", &format!("{ACCOUNTS}/default"), None), 200, "")
        .await;

    s.check(with_token(req("GET", PODS, None), &token), 200, "PodList")
        .await;
    let user = users.last();
    assert_eq!(
        user,
        kumo_api::service_account::user_info("default", "default", &uid(&account))
    );
    assert!(user.in_group("system:serviceaccounts:default"));

    // Another key's token of the same claims is nobody's.
    let (other, _) = start().await;
    let forged = request(&other, "default", token_request(json!({})), 201, "").await;
    let forged = forged["status"]["token"].as_str().unwrap();
    s.check(
        with_token(req("GET", PODS, None), forged),
        401,
        "invalid bearer token",
    )
    .await;
    other.stop().await;

    // A token for another audience does not authenticate here.
    let vault = request(
        &s,
        "default",
        token_request(json!({"audiences": ["vault"]})),
        201,
        "",
    )
    .await;
    s.check(
        with_token(
            req("GET", PODS, None),
            vault["status"]["token"].as_str().unwrap(),
        ),
        401,
        "not meant for this server",
    )
    .await;

    // Once the pod is deleted its token is refused, within a second.
    s.check(req("DELETE", &format!("{PODS}/web"), None), 200, "")
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (code, body) = s.call(with_token(req("GET", PODS, None), &token)).await;
        if code == 401 {
            assert!(
                body.contains("pod default/web") && body.contains("no longer exists"),
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token of a deleted pod still works: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_node_gets_tokens_only_for_its_own_pods() {
    let (s, _) = start().await;
    let web = s.create(PODS, pod("web")).await;
    let db = s.create(PODS, pod("db")).await;
    bind_to_new_node(&s, "web", "n1").await;
    bind_to_new_node(&s, "db", "n2").await;
    let as_node = |body: Value| {
        with_token(
            req("POST", &format!("{ACCOUNTS}/default/token"), Some(body)),
            NODE_TOKEN,
        )
    };
    s.check(as_node(bound_to("web", &uid(&web))), 201, "TokenRequest")
        .await;
    s.check(
        as_node(bound_to("db", &uid(&db))),
        403,
        r#"node \"n1\" requested token bound to a pod scheduled on a different node"#,
    )
    .await;
    s.check(
        as_node(token_request(json!({}))),
        403,
        "node requested token not bound to a pod",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_recreated_account_does_not_honour_old_tokens() {
    let (s, _) = start().await;
    s.create(
        ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci"}}),
    )
    .await;
    let answer = request(
        &s,
        "ci",
        token_request(json!({"expirationSeconds": 600})),
        201,
        "",
    )
    .await;
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    s.check(with_token(req("GET", PODS, None), &token), 200, "")
        .await;
    s.check(req("DELETE", &format!("{ACCOUNTS}/ci"), None), 200, "")
        .await;
    s.create(
        ACCOUNTS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci"}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (code, body) = s.call(with_token(req("GET", PODS, None), &token)).await;
        if code == 401 {
            assert!(body.contains("service account default/ci"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn without_a_key_no_token_is_issued() {
    let s = Server::start().await;
    s.check(
        req(
            "POST",
            &format!("{ACCOUNTS}/default/token"),
            Some(token_request(json!({}))),
        ),
        503,
        "no signing key",
    )
    .await;
    s.check(
        req("GET", &format!("{ACCOUNTS}/default/token"), None),
        405,
        "",
    )
    .await;
    s.stop().await;
}
