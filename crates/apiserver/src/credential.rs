//! `POST /api/v1/nodes/{name}/credential`: a new node credential (a Token of type node, user
//! `system:node:NAME`, group `system:nodes`), its secret returned once. A join token may ask
//! for one while it has uses left (each answer counts one, by an update on the token's
//! revision, so two racing joins cannot both take the last use); the node itself may ask to
//! rotate (its old credential then expires a little later); a node may not ask for another's.
//! Who else may call it is the authorizer's business.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, object_key, prefix};
use crate::tokens::{kind, new_secret, reveal, store_with_secret};
use crate::update::RETRIES;
use crate::App;
use kumo_api::token::{
    hash_secret, use_join_token, JoinRefusal, BOOTSTRAP_USER_PREFIX, GROUP_BOOTSTRAPPERS,
    MAX_USAGE_LIMIT,
};
use kumo_api::{Token, UserInfo};
use kumo_store::StoreError;
use serde_json::Value;
use std::time::Duration;

/// How long a rotated node credential still works after its successor is issued, so requests
/// in flight with it finish.
pub const ROTATION_GRACE: Duration = Duration::from_secs(60);

/// Who asks for a credential, as far as this handler cares.
#[derive(Debug, PartialEq, Eq)]
enum Caller<'a> {
    /// A join token's user: the token's name.
    Join(&'a str),
    /// The node itself, rotating.
    Node,
    /// Anyone else the authorizer let through (an admin).
    Other,
}

/// Sorts the caller out, refusing a node that asks for another node.
fn caller<'a>(user: &'a UserInfo, node: &str) -> ApiResult<Caller<'a>> {
    if user.in_group(GROUP_BOOTSTRAPPERS) {
        return match user.username.strip_prefix(BOOTSTRAP_USER_PREFIX) {
            Some(name) if !name.is_empty() => Ok(Caller::Join(name)),
            _ => Err(ApiError::forbidden(format!(
                "user {:?} in {GROUP_BOOTSTRAPPERS} is not a join token's user",
                user.username
            ))),
        };
    }
    match user.node_name() {
        Some(own) if own == node => Ok(Caller::Node),
        Some(own) => Err(ApiError::forbidden(format!(
            "node {own:?} may not get a credential for node {node:?}"
        ))),
        None => Ok(Caller::Other),
    }
}

/// Issues a credential for `node` to `user`, who presented `bearer`.
pub async fn issue(app: &App, user: &UserInfo, bearer: &str, node: &str) -> ApiResult<Value> {
    if !kumo_api::validation::is_dns_subdomain(node) {
        return Err(ApiError::bad_request(format!(
            "metadata.name: Invalid value: {node:?}: a node name must be a lowercase RFC 1123 subdomain"
        )));
    }
    let rotated = match caller(user, node)? {
        Caller::Join(name) => {
            // Before a use is counted: a join never takes over a node that has a credential.
            refuse_taken(app, node).await?;
            count_join(app, name, bearer).await?;
            None
        }
        Caller::Node => Some(hash_secret(bearer)),
        Caller::Other => None,
    };
    let (token, secret) = issue_node_credential(
        app.store.as_ref(),
        &app.transformer,
        node,
        app.node_credential_ttl,
    )
    .await?;
    if let Some(hash) = rotated {
        expire_soon(app, &hash).await;
    }
    let mut value = serde_json::to_value(&token).map_err(|e| ApiError::internal(e.to_string()))?;
    reveal(&mut value, secret);
    tracing::info!(node, token = %token.metadata.name, by = %user.username, "node credential issued");
    Ok(value)
}

/// A new node credential for `node` that lives `ttl`, stored; the token and its secret.
pub async fn issue_node_credential(
    store: &dyn kumo_store::Store,
    t: &crate::Transformer,
    node: &str,
    ttl: Duration,
) -> ApiResult<(Token, String)> {
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|e| ApiError::internal(format!("node credential ttl: {e}")))?;
    let expires = now
        .checked_add_signed(ttl)
        .ok_or_else(|| ApiError::internal("node credential ttl overflows the clock"))?;
    for _ in 0..RETRIES {
        let secret = new_secret()?;
        let name = credential_name(node, &secret);
        let token = Token::node(&name, node, expires);
        match store_with_secret(store, t, token, &secret).await {
            Ok(t) => return Ok((t, secret)),
            Err(StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(ApiError::internal("no free name for a node credential"))
}

/// `node-<node>-<5 hex of the secret's hash>`, or `node-<10 hex>` when that would not be a
/// valid name (a long node name).
fn credential_name(node: &str, secret: &str) -> String {
    let hash = hash_secret(secret);
    let hex = &hash["sha256:".len()..];
    let name = format!("node-{node}-{}", &hex[..5]);
    if kumo_api::validation::is_dns_subdomain(&name) {
        name
    } else {
        format!("node-{}", &hex[..10])
    }
}

/// Counts one use of join token `name` (whose secret is `bearer`), or refuses: 401 when it
/// expired or is gone, 403 when its uses are spent.
async fn count_join(app: &App, name: &str, bearer: &str) -> ApiResult<()> {
    let key = object_key(&kind(), None, name);
    // A conflict means another join took a use: past the most uses a token may have, the next
    // read finds it used up, so this ends.
    let attempts = usize::try_from(MAX_USAGE_LIMIT).unwrap_or(usize::MAX) + RETRIES;
    for _ in 0..attempts {
        let kv = app
            .store
            .get(&key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::unauthorized(format!("join token {name} is gone")))?;
        let token: Token = serde_json::from_value(decode(&app.transformer, &kv)?)
            .map_err(|e| ApiError::internal(format!("stored token {name}: {e}")))?;
        if token.token_hash() != hash_secret(bearer) {
            return Err(ApiError::unauthorized(format!(
                "join token {name} was replaced"
            )));
        }
        let used = use_join_token(&token, chrono::Utc::now()).map_err(|e| match e {
            JoinRefusal::Expired(_) => ApiError::unauthorized(e.to_string()),
            JoinRefusal::UsedUp { .. } | JoinRefusal::NotJoin(_) => {
                ApiError::forbidden(e.to_string())
            }
        })?;
        let value = serde_json::to_value(&used).map_err(|e| ApiError::internal(e.to_string()))?;
        let bytes = encode(&app.transformer, &key, &value)?;
        match app.store.update(&key, bytes, Some(kv.mod_revision)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(ApiError::conflict(format!(
        "join token {name} is being used by others at once; try again"
    )))
}

/// Refuses (409) a join as `node` while that node holds an unexpired credential: a join token
/// is for a new node (or one whose credentials an admin revoked), so whoever holds one cannot
/// become a node that is already running.
async fn refuse_taken(app: &App, node: &str) -> ApiResult<()> {
    let (kvs, _) = app
        .store
        .list(&prefix(&kind(), None))
        .await
        .map_err(ApiError::store)?;
    let user = format!("{}{node}", kumo_api::user::NODE_USER_PREFIX);
    let now = chrono::Utc::now();
    let held = kvs
        .iter()
        .filter_map(|kv| decode(&app.transformer, kv).ok())
        .filter_map(|v| serde_json::from_value::<Token>(v).ok())
        .find(|t| {
            t.spec.type_ == kumo_api::token::TokenType::Node
                && t.spec.user == user
                && !t.is_expired(now)
        });
    match held {
        Some(t) => Err(ApiError::conflict(format!(
            "node {node:?} already has a credential (token {}): a join token cannot take over a node; to join it again, revoke every credential of user system:node:{node} first (kumo token ls, kumo token revoke NAME)",
            t.metadata.name
        ))),
        None => Ok(()),
    }
}

/// Makes the token with secret hash `hash` expire [`ROTATION_GRACE`] from now (if it would
/// live longer). Best effort: the node's old credential expires on its own anyway.
async fn expire_soon(app: &App, hash: &str) {
    let Ok((kvs, _)) = app.store.list(&prefix(&kind(), None)).await else {
        return;
    };
    let Some(soon) = chrono::Duration::from_std(ROTATION_GRACE)
        .ok()
        .and_then(|g| chrono::Utc::now().checked_add_signed(g))
    else {
        return;
    };
    for kv in kvs {
        let Some(mut token) = decode(&app.transformer, &kv)
            .ok()
            .and_then(|v| serde_json::from_value::<Token>(v).ok())
        else {
            continue;
        };
        if token.token_hash() != hash {
            continue;
        }
        if token.spec.expiration_timestamp.is_some_and(|t| t <= soon) {
            return;
        }
        token.spec.expiration_timestamp = Some(soon);
        let Ok(value) = serde_json::to_value(&token) else {
            return;
        };
        let Ok(bytes) = encode(&app.transformer, &kv.key, &value) else {
            return;
        };
        if let Err(e) = app
            .store
            .update(&kv.key, bytes, Some(kv.mod_revision))
            .await
        {
            tracing::warn!(token = %token.metadata.name, error = %e, "rotated node credential not shortened");
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(user: UserInfo, node: &str, expected: Result<Caller<'_>, &str>) {
        let got = caller(&user, node).map_err(|e| e.0.message.clone());
        match (got, expected) {
            (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
            (Err(a), Err(b)) => assert_eq!(a, b),
            (got, want) => panic!("{user:?} for {node}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn who_may_ask_for_a_node_credential() {
        check(
            UserInfo::new("system:bootstrap:j1", &[GROUP_BOOTSTRAPPERS]),
            "n1",
            Ok(Caller::Join("j1")),
        );
        check(
            UserInfo::new("alice", &[GROUP_BOOTSTRAPPERS]),
            "n1",
            Err("user \"alice\" in system:bootstrappers is not a join token's user"),
        );
        let n1 = UserInfo::new("system:node:n1", &[kumo_api::user::GROUP_NODES]);
        check(n1.clone(), "n1", Ok(Caller::Node));
        check(
            n1,
            "n2",
            Err("node \"n1\" may not get a credential for node \"n2\""),
        );
        check(
            UserInfo::new("admin", &[kumo_api::user::GROUP_MASTERS]),
            "n2",
            Ok(Caller::Other),
        );
    }

    #[test]
    fn credential_names_are_valid_object_names() {
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let label = "e".repeat(63);
        for node in ["n1", "gpu.rack-1", long.as_str(), label.as_str()] {
            let name = credential_name(node, "secret");
            assert!(
                kumo_api::validation::is_dns_subdomain(&name),
                "{name} ({})",
                name.len()
            );
        }
    }
}
