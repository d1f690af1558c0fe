//! Namespaces: `default` and `kumo-system` made at start, and deletion of a namespace with its contents.
//!
//! Deleting a namespace marks it (`deletionTimestamp`, `status.phase: Terminating`), refuses
//! new content in it, and deletes everything it holds in the same request: most objects go at
//! once, running pods and objects with finalizers get their graceful deletion. The namespace
//! itself is removed as soon as it is empty: in that request, or in the request that removes
//! its last object (a pod's final delete, a last finalizer's removal). Deleting it again
//! re-runs the emptying, which heals anything a crash left behind.

use crate::create;
use crate::delete::delete_object;
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, namespace_key, prefix};
use crate::object::{has_finalizers, is_deleting, now, remove_meta, set_meta};
use crate::request::Kind;
use crate::update::RETRIES;
use crate::App;
use kumo_api::{kinds, DEFAULT_NAMESPACE, SYSTEM_NAMESPACE};
use kumo_store::StoreError;
use serde_json::{json, Value};

fn namespaced_kinds() -> impl Iterator<Item = Kind> {
    kinds().iter().filter(|k| k.namespaced).map(Kind)
}

/// The namespaces every server makes at start and refuses to delete: users' default, and the
/// control plane's own (its Leases live there).
const BUILT_IN: [&str; 2] = [DEFAULT_NAMESPACE, SYSTEM_NAMESPACE];

/// Creates the built-in namespaces (`default`, `kumo-system`) unless they exist.
pub async fn ensure_default(app: &App) -> ApiResult<()> {
    let kind = Kind::lookup("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("the namespace kind is not registered"))?;
    for name in BUILT_IN {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match create::create(app, kind, None, body).await {
            Ok(_) => {}
            Err(e) if e.0.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// DELETE of a namespace.
pub async fn delete(app: &App, kind: Kind, name: &str) -> ApiResult<Value> {
    if BUILT_IN.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        )));
    }
    let key = namespace_key(name);
    let mut marked = None;
    for _ in 0..RETRIES {
        let kv = app
            .store
            .get(&key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(&kind, name))?;
        let old = decode(&app.transformer, &kv)?;
        if is_deleting(&old) {
            marked = Some(old);
            break;
        }
        let mut new = old;
        remove_meta(&mut new, "resourceVersion");
        set_meta(&mut new, "deletionTimestamp", now());
        set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
        if let Some(map) = new.as_object_mut() {
            map.insert("status".into(), json!({"phase": "Terminating"}));
        }
        match app
            .store
            .update(
                &key,
                encode(&app.transformer, &key, &new)?,
                Some(kv.mod_revision),
            )
            .await
        {
            Ok(kv) => {
                marked = Some(decode(&app.transformer, &kv)?);
                break;
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&kind, name)),
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    let Some(marked) = marked else {
        return Err(ApiError::stale(&kind, name));
    };
    empty(app, name).await?;
    Ok(finalize(app, name).await?.unwrap_or(marked))
}

/// Deletes (gracefully where due) every object in namespace `ns`.
async fn empty(app: &App, ns: &str) -> ApiResult<()> {
    for kind in namespaced_kinds() {
        let prefix = prefix(&kind, Some(ns));
        let (kvs, _) = app.store.list(&prefix).await.map_err(ApiError::store)?;
        for kv in kvs {
            let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key);
            match delete_object(app, &kind, &kv.key, name, None).await {
                Ok(_) => {}
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes namespace `ns` if it is terminating, has no finalizers and holds nothing; returns
/// the removed namespace.
pub async fn finalize(app: &App, ns: &str) -> ApiResult<Option<Value>> {
    let key = namespace_key(ns);
    let Some(kv) = app.store.get(&key).await.map_err(ApiError::store)? else {
        return Ok(None);
    };
    let obj = decode(&app.transformer, &kv)?;
    if !is_deleting(&obj) || has_finalizers(&obj) {
        return Ok(None);
    }
    for kind in namespaced_kinds() {
        let (kvs, _) = app
            .store
            .list(&prefix(&kind, Some(ns)))
            .await
            .map_err(ApiError::store)?;
        if !kvs.is_empty() {
            return Ok(None);
        }
    }
    match app.store.delete(&key, Some(kv.mod_revision)).await {
        Ok(kv) => Ok(Some(decode(&app.transformer, &kv)?)),
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(ApiError::store(e)),
    }
}

/// After an object left namespace `ns`: removes the namespace if that emptied a terminating one.
/// The object's removal already succeeded, so a failure here is only logged.
pub async fn after_removal(app: &App, kind: &Kind, ns: Option<&str>) {
    if let (true, Some(ns)) = (kind.namespaced, ns) {
        if let Err(e) = finalize(app, ns).await {
            tracing::warn!(namespace = ns, error = %e, "removing an emptied namespace failed");
        }
    }
}
