//! Delete: immediate, or graceful (finalizers pending, or a pod still running on a node).
//!
//! A graceful delete sets `deletionTimestamp` and `deletionGracePeriodSeconds` and leaves the
//! object in place; the agent (or whoever holds the finalizer) completes it: a later delete with
//! `gracePeriodSeconds=0`, a status that reaches a terminal phase, or the removal of the last
//! finalizer removes the object.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, object_key};
use crate::object::{
    get_meta, has_finalizers, is_deleting, is_running_bound_pod, now, remove_meta, set_meta,
};
use crate::request::Kind;
use crate::update::RETRIES;
use crate::{namespace, App};
use kumo_store::StoreError;
use serde_json::{json, Value};

/// The default grace period of a pod, as in Kubernetes.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// DELETE of one object; a Namespace also deletes what it holds.
pub async fn delete(
    app: &App,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    grace: Option<i64>,
) -> ApiResult<Value> {
    if kind.is_namespace() {
        return namespace::delete(app, kind, name).await;
    }
    let key = object_key(&kind, ns, name);
    let (obj, removed) = delete_object(app, &kind, &key, name, grace).await?;
    if removed {
        namespace::after_removal(app, &kind, ns).await;
    }
    Ok(obj)
}

/// Deletes or marks the object at `key`; returns its last state and whether it is gone.
pub async fn delete_object(
    app: &App,
    kind: &Kind,
    key: &str,
    name: &str,
    grace: Option<i64>,
) -> ApiResult<(Value, bool)> {
    for _ in 0..RETRIES {
        let kv = app
            .store
            .get(key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let old = decode(&app.transformer, &kv)?;
        let running = is_running_bound_pod(kind.is_pod(), &old);
        if has_finalizers(&old) || (running && grace != Some(0)) {
            let grace = if running {
                grace.unwrap_or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(DEFAULT_GRACE_SECONDS)
                })
            } else {
                0
            };
            let mut new = old.clone();
            remove_meta(&mut new, "resourceVersion");
            if is_deleting(&old) {
                // Already going: a delete may only shorten the grace period.
                let current = get_meta(&old, "deletionGracePeriodSeconds").and_then(Value::as_i64);
                if current.is_some_and(|c| grace >= c) {
                    return Ok((old, false));
                }
            } else {
                set_meta(&mut new, "deletionTimestamp", now());
            }
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(grace));
            match app
                .store
                .update(
                    key,
                    encode(&app.transformer, key, &new)?,
                    Some(kv.mod_revision),
                )
                .await
            {
                Ok(kv) => return Ok((decode(&app.transformer, &kv)?, false)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(kind, name)),
                Err(e) => return Err(ApiError::store(e)),
            }
        }
        match app.store.delete(key, Some(kv.mod_revision)).await {
            Ok(kv) => return Ok((decode(&app.transformer, &kv)?, true)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(kind, name)),
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(ApiError::stale(kind, name))
}
