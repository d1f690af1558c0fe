//! Managed tokens through the real server: the secret shown once, hashes only in the store,
//! revocation and expiry within a second, join tokens exchanged for node credentials.

use super::*;
use crate::auth::{Chain, StaticTokens};
use crate::tokens::ManagedTokens;

const TOKENS: &str = "/apis/auth.kumo.dev/v1/tokens";

/// A server whose authenticator is the admin [`TOKEN`] plus the tokens the API manages.
async fn managed() -> (Server, Arc<dyn kumo_store::Store>) {
    managed_keeping(Duration::from_secs(3600)).await
}

/// [`managed`], deleting tokens expired for longer than `keep_expired`.
async fn managed_keeping(keep_expired: Duration) -> (Server, Arc<dyn kumo_store::Store>) {
    let store: Arc<dyn kumo_store::Store> = Arc::new(MemStore::new());
    let identity = Arc::new(crate::Transformer::identity());
    let (tokens, feed) = ManagedTokens::start(
        Arc::clone(&store),
        Arc::clone(&identity),
        keep_expired,
        std::future::pending(),
    )
    .await
    .unwrap();
    let feed = tokio::spawn(feed);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        authenticator: Arc::new(Chain(vec![
            Arc::new(StaticTokens::admins([TOKEN.to_string()])),
            tokens,
        ])),
        ..Config::new(Arc::clone(&store), vec![])
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
        feed.abort();
    }));
    let server = Server {
        base,
        stop: Some(stop),
        task,
        client: super::plain_http_client(),
    };
    server.check(req("GET", "/version", None), 200, "").await;
    (server, store)
}

fn as_user(r: Req, token: &str) -> Req {
    Req {
        token: Some(token.to_string()),
        ..r
    }
}

/// Polls `r` until it answers `status` with `message`, for at most `within`.
async fn eventually(s: &Server, r: impl Fn() -> Req, status: u16, message: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (got, body) = s.call(r()).await;
        if got.as_u16() == status && body.contains(message) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {status} {message:?} within {within:?}: {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn login(name: &str, extra: Value) -> Value {
    let mut spec = json!({"user": "alice", "groups": ["ml-team"]});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn a_token_is_shown_once_stored_hashed_and_revoked_within_a_second() {
    let (s, store) = managed().await;
    let created = s.create(TOKENS, login("alice", json!({}))).await;
    let secret = created["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    assert_eq!(
        created["status"]["tokenHash"],
        kumo_api::token::hash_secret(&secret)
    );
    assert_eq!(created["spec"]["type"], "login");
    for path in [TOKENS.to_string(), format!("{TOKENS}/alice")] {
        let (_, body) = s.call(req("GET", &path, None)).await;
        assert!(
            body.contains("tokenHash") && !body.contains(&secret),
            "{body}"
        );
    }
    let (kvs, _) = store.list("/registry/").await.unwrap();
    assert!(kvs
        .iter()
        .all(|kv| !String::from_utf8_lossy(&kv.value).contains(&secret)));

    let ns = || as_user(req("GET", "/api/v1/namespaces", None), &secret);
    eventually(&s, ns, 200, "NamespaceList", Duration::from_secs(1)).await;
    s.check(req("DELETE", &format!("{TOKENS}/alice"), None), 200, "")
        .await;
    eventually(&s, ns, 401, "invalid bearer token", Duration::from_secs(1)).await;
    s.stop().await;
}

#[tokio::test]
async fn tokens_expire_and_bad_ones_name_the_field() {
    let (s, _) = managed().await;
    let created = s
        .create(TOKENS, login("brief", json!({"ttlSeconds": 1})))
        .await;
    assert!(created["spec"]["expirationTimestamp"].is_string());
    assert!(created["spec"].get("ttlSeconds").is_none());
    let secret = created["status"]["token"].as_str().unwrap().to_string();
    let ns = || as_user(req("GET", "/api/v1/namespaces", None), &secret);
    eventually(&s, ns, 401, "token expired", Duration::from_secs(3)).await;

    s.check(
        req(
            "POST",
            TOKENS,
            Some(json!({"metadata": {"name": "x"}, "spec": {"groups": ["a b"]}})),
        ),
        422,
        "spec.user: Required value",
    )
    .await;
    s.check(
        req("POST", TOKENS, Some(login("y", json!({"ttlSeconds": 0})))),
        422,
        "spec.ttlSeconds: Invalid value: 0",
    )
    .await;
    // The secret hash is the server's: a client cannot choose it, on create or later.
    let mine = json!({"metadata": {"name": "z"}, "spec": {"user": "u"}, "status": {"tokenHash": "sha256:00"}});
    let z = s.create(TOKENS, mine).await;
    assert_ne!(z["status"]["tokenHash"], "sha256:00");
    let mut changed = z.clone();
    changed["status"]["tokenHash"] = json!("sha256:00");
    changed["status"].as_object_mut().unwrap().remove("token");
    s.check(
        req("PUT", &format!("{TOKENS}/z/status"), Some(changed)),
        422,
        "status.tokenHash: Invalid value: field is immutable",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_join_token_cannot_take_over_a_node_that_has_a_credential() {
    let (s, _store) = managed().await;
    let join = json!({"metadata": {"name": "j2"}, "spec": {"type": "join", "user": "system:bootstrap:j2",
                      "groups": ["system:bootstrappers"], "ttlSeconds": 3600, "usageLimit": 3}});
    let secret = s.create(TOKENS, join).await["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = |node: &str| {
        as_user(
            req("POST", &format!("/api/v1/nodes/{node}/credential"), None),
            &secret,
        )
    };
    s.check(ask("n1"), 201, "system:node:n1").await;
    // n1 now holds a credential: joining as n1 again is refused, and costs no use.
    s.check(ask("n1"), 409, "already has a credential").await;
    let j2 = s
        .check(req("GET", &format!("{TOKENS}/j2"), None), 200, "")
        .await;
    assert_eq!(j2["status"]["usageCount"], 1);
    s.check(ask("n2"), 201, "system:node:n2").await;
}

#[tokio::test]
async fn a_join_token_buys_one_node_credential_and_nodes_rotate_their_own() {
    let (s, store) = managed().await;
    let join = json!({"metadata": {"name": "j1"}, "spec": {"type": "join", "user": "system:bootstrap:j1",
                      "groups": ["system:bootstrappers"], "ttlSeconds": 3600}});
    let secret = s.create(TOKENS, join).await["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = |node: &str, token: &str| {
        as_user(
            req("POST", &format!("/api/v1/nodes/{node}/credential"), None),
            token,
        )
    };
    let cred = s.check(ask("n1", &secret), 201, "system:node:n1").await;
    assert_eq!(cred["spec"]["type"], "node");
    assert_eq!(cred["spec"]["groups"], json!(["system:nodes"]));
    assert!(cred["spec"]["expirationTimestamp"].is_string());
    let node_secret = cred["status"]["token"].as_str().unwrap().to_string();
    let used = s
        .check(req("GET", &format!("{TOKENS}/j1"), None), 200, "")
        .await;
    assert_eq!(used["status"]["usageCount"], 1);
    // The second use is refused, by the handler or (once it saw the count) the authenticator.
    let (code, body) = s.call(ask("n2", &secret)).await;
    assert!(
        matches!(code.as_u16(), 401 | 403) && body.contains("used"),
        "{code} {body}"
    );

    // The node may rotate its own credential, not get another node's.
    let ns = || as_user(req("GET", "/api/v1/namespaces", None), &node_secret);
    eventually(&s, ns, 200, "NamespaceList", Duration::from_secs(1)).await;
    s.check(
        ask("n2", &node_secret),
        403,
        "may not get a credential for node \\\"n2\\\"",
    )
    .await;
    let next = s
        .check(ask("n1", &node_secret), 201, "system:node:n1")
        .await;
    assert_ne!(next["status"]["token"], node_secret.as_str());
    // The old one now expires within the rotation grace.
    let old = s
        .check(
            req(
                "GET",
                &format!("{TOKENS}/{}", cred["metadata"]["name"].as_str().unwrap()),
                None,
            ),
            200,
            "",
        )
        .await;
    let expires: kumo_api::Time =
        serde_json::from_value(old["spec"]["expirationTimestamp"].clone()).unwrap();
    assert!(expires <= chrono::Utc::now() + chrono::Duration::seconds(61));

    // An expired join token is refused.
    let mut past = Token::join("j2", 60, 1);
    past.spec.ttl_seconds = None;
    past.spec.expiration_timestamp = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    let identity = crate::Transformer::identity();
    crate::tokens::store_with_secret(store.as_ref(), &identity, past, "old-join")
        .await
        .unwrap();
    eventually(
        &s,
        || ask("n3", "old-join"),
        401,
        "token expired",
        Duration::from_secs(1),
    )
    .await;
    s.check(
        ask("Bad_Name", &node_secret),
        400,
        "metadata.name: Invalid value",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn racing_joins_take_only_the_uses_there_are() {
    let (s, _) = managed().await;
    let join = json!({"metadata": {"name": "j"}, "spec": {"type": "join", "user": "system:bootstrap:j",
                      "groups": ["system:bootstrappers"], "ttlSeconds": 3600, "usageLimit": 3}});
    let secret = s.create(TOKENS, join).await["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let asks = (0..8).map(|i| {
        s.call(as_user(
            req("POST", &format!("/api/v1/nodes/n{i}/credential"), None),
            &secret,
        ))
    });
    let answers = futures_util::future::join_all(asks).await;
    let issued = answers.iter().filter(|(c, _)| c.as_u16() == 201).count();
    assert_eq!(issued, 3, "{answers:?}");
    assert!(answers
        .iter()
        .all(|(c, b)| c.as_u16() == 201
            || (matches!(c.as_u16(), 401 | 403) && b.contains("used up"))));
    let used = s
        .check(req("GET", &format!("{TOKENS}/j"), None), 200, "")
        .await;
    assert_eq!(used["status"]["usageCount"], 3);
    s.stop().await;
}

#[tokio::test]
async fn the_server_deletes_tokens_some_time_after_they_expired() {
    let (s, _) = managed_keeping(Duration::from_secs(1)).await;
    s.create(TOKENS, login("brief", json!({"ttlSeconds": 1})))
        .await;
    s.create(TOKENS, login("lasting", json!({"ttlSeconds": 3600})))
        .await;
    // Expired at 1 s, kept 1 s more, swept within the next second or so.
    let get = || req("GET", &format!("{TOKENS}/brief"), None);
    eventually(&s, get, 404, "not found", Duration::from_secs(5)).await;
    s.check(req("GET", &format!("{TOKENS}/lasting"), None), 200, "")
        .await;
    s.stop().await;
}

use kumo_api::Token;
