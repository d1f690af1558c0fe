//! Managed tokens (`auth.kumo.dev/v1` Token): the authenticator that answers from an in-memory
//! map of secret hash -> token, fed by a list and watch of the store (so a deleted token is
//! refused as soon as its delete is seen, and several API servers over one store agree), the
//! sweep that deletes tokens long expired, and the writes that make tokens with a server-made
//! secret.

use crate::auth::{Authenticator, UNKNOWN_TOKEN};
pub use crate::credential::issue_node_credential;
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, object_key, prefix};
use crate::request::Kind;
use crate::transformer::Transformer;
use kumo_api::token::{format_secret, hash_secret, TokenStatus, TokenType};
use kumo_api::{Token, UserInfo};
use kumo_store::{EventKind, KeyValue, Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The served Token kind.
pub fn kind() -> Kind {
    Kind::lookup("auth.kumo.dev", "v1", "tokens").expect("the Token kind is registered")
}

/// A new secret: 256 bits from the OS.
pub fn new_secret() -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ApiError::internal(format!("no randomness for a token: {e}")))?;
    Ok(format_secret(&bytes))
}

/// What the authenticator keeps of one token.
#[derive(Debug, Clone)]
struct Entry {
    user: UserInfo,
    expires: Option<kumo_api::Time>,
    used_up: bool,
}

impl Entry {
    fn of(t: &Token) -> Entry {
        let groups: Vec<&str> = t.spec.groups.iter().map(String::as_str).collect();
        Entry {
            user: UserInfo::new(t.spec.user.clone(), &groups),
            expires: t.spec.expiration_timestamp,
            used_up: t.spec.type_ == TokenType::Join && t.usage_count() >= t.usage_limit(),
        }
    }
}

/// The authenticator of managed tokens. The clock is read at each request, so a token stops
/// working at its expiry, not when the sweep deletes it.
#[derive(Default)]
pub struct ManagedTokens {
    by_hash: RwLock<HashMap<String, Entry>>,
    /// Token name -> hash, to drop an entry on delete.
    names: RwLock<HashMap<String, String>>,
}

impl Authenticator for ManagedTokens {
    fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
        self.authenticate_at(token, chrono::Utc::now())
    }
}

impl ManagedTokens {
    fn authenticate_at(&self, token: &str, now: kumo_api::Time) -> Result<UserInfo, String> {
        let hash = hash_secret(token);
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(&hash).ok_or_else(|| UNKNOWN_TOKEN.to_string())?;
        if entry.expires.is_some_and(|t| t <= now) {
            return Err("token expired".to_string());
        }
        if entry.used_up {
            return Err("join token used up".to_string());
        }
        Ok(entry.user.clone())
    }

    fn put(&self, t: &Token) {
        let hash = t.token_hash().to_string();
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        let mut map = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = names.insert(t.metadata.name.clone(), hash.clone()) {
            map.remove(&old);
        }
        if !hash.is_empty() {
            map.insert(hash, Entry::of(t));
        }
    }

    fn remove(&self, name: &str) {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(hash) = names.remove(name) {
            self.by_hash
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&hash);
        }
    }

    fn replace_all(&self, tokens: &[Token]) {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        let mut map = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        names.clear();
        map.clear();
        for t in tokens.iter().filter(|t| !t.token_hash().is_empty()) {
            names.insert(t.metadata.name.clone(), t.token_hash().to_string());
            map.insert(t.token_hash().to_string(), Entry::of(t));
        }
    }

    /// Loads every token from the store, then returns the authenticator and the task that
    /// keeps it current (a watch, relisting when its revision is compacted) and deletes tokens
    /// expired more than `keep_expired` ago, until `stop` resolves.
    pub async fn start(
        store: Arc<dyn Store>,
        transformer: Arc<Transformer>,
        keep_expired: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> ApiResult<(
        Arc<ManagedTokens>,
        impl Future<Output = ()> + Send + 'static,
    )> {
        let tokens = Arc::new(ManagedTokens::default());
        let revision = tokens.relist(store.as_ref(), &transformer).await?;
        let feed = {
            let tokens = Arc::clone(&tokens);
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = tokens.follow(store, transformer, revision, keep_expired) => {}
                }
            }
        };
        Ok((tokens, feed))
    }

    async fn relist(&self, store: &dyn Store, t: &Transformer) -> ApiResult<u64> {
        let (kvs, revision) = store
            .list(&prefix(&kind(), None))
            .await
            .map_err(ApiError::store)?;
        let tokens: Vec<Token> = kvs.iter().filter_map(|kv| read(t, kv)).collect();
        self.replace_all(&tokens);
        Ok(revision)
    }

    async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        t: Arc<Transformer>,
        mut revision: u64,
        keep_expired: Duration,
    ) {
        let sweep_every = Duration::from_secs(30).min(keep_expired.max(Duration::from_secs(1)));
        let mut sweep = tokio::time::interval(sweep_every);
        loop {
            let mut watch = match store.watch(&prefix(&kind(), None), revision).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch tokens; relisting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(r) = self.relist(store.as_ref(), &t).await {
                        revision = r;
                    }
                    continue;
                }
            };
            loop {
                tokio::select! {
                    event = watch.next() => match event {
                        Some(Ok(ev)) => {
                            revision = ev.revision();
                            let name = ev.kv.key.rsplit('/').next().unwrap_or("").to_string();
                            match ev.kind {
                                EventKind::Delete => self.remove(&name),
                                EventKind::Put => match read(&t, &ev.kv) {
                                    Some(token) => self.put(&token),
                                    None => self.remove(&name),
                                },
                            }
                        }
                        Some(Err(StoreError::Compacted { .. })) => {
                            match self.relist(store.as_ref(), &t).await {
                                Ok(r) => revision = r,
                                Err(e) => tracing::warn!(error = %e, "cannot relist tokens"),
                            }
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "token watch failed; watching again");
                            break;
                        }
                        None => return,
                    },
                    _ = sweep.tick() => sweep_expired(store.as_ref(), &t, keep_expired).await,
                }
            }
        }
    }
}

fn read(t: &Transformer, kv: &KeyValue) -> Option<Token> {
    let value = decode(t, kv).ok()?;
    serde_json::from_value(value)
        .map_err(|e| tracing::warn!(key = %kv.key, error = %e, "a stored token cannot be read"))
        .ok()
}

/// Deletes the tokens that expired more than `keep` ago.
async fn sweep_expired(store: &dyn Store, t: &Transformer, keep: Duration) {
    let Ok((kvs, _)) = store.list(&prefix(&kind(), None)).await else {
        return;
    };
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return;
    };
    let Some(cutoff) = chrono::Utc::now().checked_sub_signed(keep) else {
        return;
    };
    for kv in kvs {
        if read(t, &kv).is_some_and(|tok| tok.is_expired(cutoff)) {
            match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => tracing::info!(key = %kv.key, "deleted an expired token"),
                Err(e) => tracing::debug!(key = %kv.key, error = %e, "expired token not deleted"),
            }
        }
    }
}

/// Fills in what the server sets on a token being created: a new secret's hash (returned with
/// the secret, which the caller puts in the response only) and the expiry from `ttlSeconds`.
pub fn prepare(value: &mut serde_json::Value, now: kumo_api::Time) -> ApiResult<String> {
    let secret = new_secret()?;
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a json object",
        ));
    };
    map.insert(
        "status".into(),
        serde_json::to_value(TokenStatus {
            token_hash: hash_secret(&secret),
            usage_count: 0,
            token: None,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?,
    );
    if let Some(spec) = map.get_mut("spec").and_then(|s| s.as_object_mut()) {
        if let Some(ttl) = spec.remove("ttlSeconds").and_then(|v| v.as_i64()) {
            // Admission bounded the ttl already; a bad one is refused there, not here.
            let expires = (0..=kumo_api::bounds::MAX_DURATION_SECONDS)
                .contains(&ttl)
                .then(|| now.checked_add_signed(chrono::Duration::seconds(ttl)))
                .flatten();
            if let Some(at) = expires {
                spec.insert(
                    "expirationTimestamp".into(),
                    serde_json::Value::String(kumo_api::keys::format_time(at)),
                );
            }
        }
    }
    Ok(secret)
}

/// Adds the secret to a created token's JSON (the create response only).
pub fn reveal(created: &mut serde_json::Value, secret: String) {
    if let Some(status) = created.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.insert("token".into(), serde_json::Value::String(secret));
    }
}

/// Stores `token` (already admitted) with the hash of `secret`; `AlreadyExists` when a token of
/// that name is there. For tokens the server makes itself (the admin's, a node's).
pub async fn store_with_secret(
    store: &dyn Store,
    t: &Transformer,
    mut token: Token,
    secret: &str,
) -> Result<Token, StoreError> {
    use kumo_api::Resource;
    token.set_type_meta();
    token.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    token.metadata.creation_timestamp = Some(chrono::Utc::now());
    token.status = Some(TokenStatus {
        token_hash: hash_secret(secret),
        usage_count: 0,
        token: None,
    });
    let key = object_key(&kind(), None, &token.metadata.name);
    let value = serde_json::to_value(&token).map_err(|e| StoreError::Backend(e.to_string()))?;
    let bytes = encode(t, &key, &value).map_err(|e| StoreError::Backend(e.to_string()))?;
    store.create(&key, bytes).await?;
    Ok(token)
}

/// Whether a token named `name` exists.
pub async fn exists(store: &dyn Store, name: &str) -> Result<bool, StoreError> {
    Ok(store.get(&object_key(&kind(), None, name)).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> kumo_api::Time {
        chrono::DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn token(name: &str, secret: &str, expires: Option<i64>) -> Token {
        let mut t = Token {
            metadata: kumo_api::ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        t.spec.user = format!("user-{name}");
        t.spec.groups = vec!["team".into()];
        t.spec.expiration_timestamp = expires.map(at);
        t.status = Some(TokenStatus {
            token_hash: hash_secret(secret),
            ..Default::default()
        });
        t
    }

    fn check(tokens: &ManagedTokens, secret: &str, now: i64, expected: Result<&str, &str>) {
        let got = tokens.authenticate_at(secret, at(now)).map(|u| u.username);
        assert_eq!(
            got,
            expected.map(str::to_string).map_err(str::to_string),
            "{secret} at {now}"
        );
    }

    #[test]
    fn tokens_are_found_by_hash_and_refused_once_expired_or_gone() {
        let tokens = ManagedTokens::default();
        tokens.replace_all(&[token("a", "sa", None), token("b", "sb", Some(100))]);
        check(&tokens, "sa", 0, Ok("user-a"));
        check(&tokens, "sb", 99, Ok("user-b"));
        check(&tokens, "sb", 100, Err("token expired"));
        check(&tokens, "nope", 0, Err(UNKNOWN_TOKEN));
        let user = tokens.authenticate_at("sa", at(0)).unwrap();
        assert!(user.in_group("team") && user.in_group(kumo_api::user::GROUP_AUTHENTICATED));
        tokens.remove("a");
        check(&tokens, "sa", 0, Err(UNKNOWN_TOKEN));
        // A token whose secret changes under the same name (deleted and made again).
        tokens.put(&token("b", "sb2", None));
        check(&tokens, "sb", 0, Err(UNKNOWN_TOKEN));
        check(&tokens, "sb2", 0, Ok("user-b"));
        let mut join = Token::join("j", 60, 1);
        join.status = Some(TokenStatus {
            token_hash: hash_secret("sj"),
            usage_count: 1,
            token: None,
        });
        tokens.put(&join);
        check(&tokens, "sj", 0, Err("join token used up"));
    }

    #[tokio::test]
    async fn a_watch_that_fell_behind_the_history_relists() {
        let store: Arc<dyn Store> = Arc::new(kumo_store::MemStore::with_window(
            kumo_store::WatchWindow::new(2, 1 << 20),
        ));
        let t = Arc::new(Transformer::identity());
        let tokens = Arc::new(ManagedTokens::default());
        let revision = tokens.relist(store.as_ref(), &t).await.unwrap();
        // More writes than the history keeps: a watch from `revision` is compacted.
        for i in 0..5 {
            let mut tok = token(&format!("t{i}"), "x", None);
            tok.status = None;
            store_with_secret(store.as_ref(), &t, tok, &format!("s{i}"))
                .await
                .unwrap();
        }
        let compacted = match store.watch(&prefix(&kind(), None), revision).await {
            Err(StoreError::Compacted { .. }) => true,
            Ok(mut w) => matches!(w.next().await, Some(Err(StoreError::Compacted { .. }))),
            Err(_) => false,
        };
        assert!(compacted, "the test needs a watch that fell behind");
        let follow = tokio::spawn(Arc::clone(&tokens).follow(
            Arc::clone(&store),
            t,
            revision,
            Duration::from_secs(3600),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while (0..5).any(|i| tokens.authenticate(&format!("s{i}")).is_err()) {
            assert!(tokio::time::Instant::now() < deadline, "never relisted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        follow.abort();
    }

    #[test]
    fn create_sets_a_hash_and_the_expiry_and_never_keeps_the_secret() {
        let mut v = serde_json::json!({"metadata": {"name": "t"}, "spec": {"user": "u", "ttlSeconds": 60},
                                       "status": {"tokenHash": "sha256:mine"}});
        let secret = prepare(&mut v, at(1000)).unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(v["status"]["tokenHash"], hash_secret(&secret));
        assert_eq!(v["spec"]["expirationTimestamp"], "1970-01-01T00:17:40Z");
        assert!(v["spec"].get("ttlSeconds").is_none());
        assert!(!v.to_string().contains(&secret));
        reveal(&mut v, secret.clone());
        assert_eq!(v["status"]["token"], secret.as_str());
        assert_ne!(prepare(&mut v, at(0)).unwrap(), secret);
    }
}
