//! Update (PUT) and merge patch, on the main resource or `/status`, with optimistic concurrency.
//!
//! Both read the stored object, build the new one, admit it, and write it with the read
//! revision as the store's precondition, so there is no lost update under races.

use crate::create::{check_namespace_field, check_type};
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, decode_stale, encode, object_key};
use crate::object::{
    get_meta, has_finalizers, is_deleting, is_running_bound_pod, remove_meta, set_meta,
};
use crate::request::{Kind, Subresource};
use crate::{namespace, App};
use kumo_api::patch::merge_patch;
use kumo_store::{Revision, StoreError};
use serde_json::{json, Value};

/// How many times a write that lost a race re-reads and tries again.
pub const RETRIES: usize = 5;

/// Metadata the server keeps from the stored object on a main-resource update.
const KEPT_FIELDS: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// `metadata.resourceVersion` of a body, as a precondition.
fn precondition(kind: &Kind, name: &str, body: &Value) -> ApiResult<Option<Revision>> {
    match get_meta(body, "resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| ApiError::stale(kind, name)),
        Some(other) => Err(ApiError::bad_request(format!(
            "metadata.resourceVersion: invalid value {other}: must be a string"
        ))),
    }
}

/// Checks the body names the object in the path (filling the name in when absent).
fn check_identity(kind: &Kind, ns: Option<&str>, name: &str, body: &mut Value) -> ApiResult<()> {
    check_type(kind, body)?;
    check_namespace_field(kind, ns, body)?;
    match get_meta(body, "name") {
        None | Some(Value::Null) => set_meta(body, "name", Value::String(name.into())),
        Some(Value::String(got)) if got == name => {}
        Some(got) => {
            return Err(ApiError::bad_request(format!(
                "metadata.name: the name of the object ({got}) does not match the name on the url ({name})"
            )))
        }
    }
    Ok(())
}

/// PUT: replaces the object (or only its status).
pub async fn update(
    app: &App,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    mut body: Value,
) -> ApiResult<Value> {
    check_identity(&kind, ns, name, &mut body)?;
    let pre = precondition(&kind, name, &body)?;
    write(app, kind, ns, name, sub, pre, |_| Ok(body.clone())).await
}

/// PATCH: applies a JSON merge patch to the stored object (or only its status).
pub async fn patch(
    app: &App,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    patch: Value,
) -> ApiResult<Value> {
    let pre = precondition(&kind, name, &patch)?;
    write(app, kind, ns, name, sub, pre, |old| {
        let mut new = old.clone();
        merge_patch(&mut new, &patch);
        check_identity(&kind, ns, name, &mut new)?;
        Ok(new)
    })
    .await
}

enum Commit {
    Done(Value),
    /// Lost a race: re-read and try again.
    Retry,
}

/// The shared path of update and patch.
async fn write(
    app: &App,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    pre: Option<Revision>,
    make: impl Fn(&Value) -> ApiResult<Value>,
) -> ApiResult<Value> {
    let key = object_key(&kind, ns, name);
    for _ in 0..RETRIES {
        let kv = app
            .store
            .get(&key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(&kind, name))?;
        if pre.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ApiError::stale(&kind, name));
        }
        let (old, stale) = decode_stale(&app.transformer, &kv)?;
        let new = next_object(&kind, name, sub, &old, make(&old)?)?;
        crate::domains::check_unique(app, &kind, Some(&old), &new).await?;
        let mut old_plain = old.clone();
        remove_meta(&mut old_plain, "resourceVersion");
        // An unchanged object is not written, unless its stored bytes are stale (encrypted with
        // an old key, or plain): then a read-and-write-back re-encrypts it, as in Kubernetes.
        if new == old_plain && !stale {
            return Ok(old);
        }
        match commit(app, &kind, ns, &key, kv.mod_revision, new).await? {
            Commit::Done(v) => return Ok(v),
            Commit::Retry if pre.is_some() => return Err(ApiError::stale(&kind, name)),
            Commit::Retry => {}
        }
    }
    Err(ApiError::stale(&kind, name))
}

/// Builds, admits and checks the object an update stores, from the stored one and the
/// client's version.
fn next_object(
    kind: &Kind,
    name: &str,
    sub: Option<Subresource>,
    old: &Value,
    proposed: Value,
) -> ApiResult<Value> {
    let mut new = match sub {
        None => {
            let mut new = proposed;
            for field in KEPT_FIELDS {
                match get_meta(old, field) {
                    Some(v) => set_meta(&mut new, field, v.clone()),
                    None => {
                        remove_meta(&mut new, field);
                    }
                }
            }
            if kind.has_status {
                set_status(&mut new, old.get("status").cloned());
            }
            new
        }
        Some(Subresource::Status) => {
            let mut new = old.clone();
            set_status(&mut new, proposed.get("status").cloned());
            new
        }
    };
    remove_meta(&mut new, "resourceVersion");
    let mut new = (kind.admit)(new).map_err(|errors| ApiError::invalid(kind, name, &errors))?;
    let mut old_plain = old.clone();
    remove_meta(&mut old_plain, "resourceVersion");
    let errors = (kind.validate_update)(&old_plain, &new);
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, name, &errors));
    }
    if new.get("spec") != old.get("spec") {
        let generation = get_meta(old, "generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_meta(&mut new, "generation", json!(generation.saturating_add(1)));
    }
    Ok(new)
}

fn set_status(obj: &mut Value, status: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match status {
            Some(s) if !s.is_null() => {
                map.insert("status".into(), s);
            }
            _ => {
                map.remove("status");
            }
        }
    }
}

/// Whether an object marked for deletion has nothing left to wait for.
pub fn deletion_finished(kind: &Kind, obj: &Value) -> bool {
    is_deleting(obj) && !has_finalizers(obj) && !is_running_bound_pod(kind.is_pod(), obj)
}

/// Writes `new` over revision `rev`; then removes it if its deletion has finished.
async fn commit(
    app: &App,
    kind: &Kind,
    ns: Option<&str>,
    key: &str,
    rev: Revision,
    new: Value,
) -> ApiResult<Commit> {
    let name = crate::object::name(&new).to_string();
    let kv = match app
        .store
        .update(key, encode(&app.transformer, key, &new)?, Some(rev))
        .await
    {
        Ok(kv) => kv,
        Err(StoreError::Conflict { .. }) => return Ok(Commit::Retry),
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(kind, &name)),
        Err(e) => return Err(ApiError::store(e)),
    };
    let stored = decode(&app.transformer, &kv)?;
    if kind.is_namespace() {
        // A namespace goes only once it is empty.
        if deletion_finished(kind, &stored) {
            if let Some(removed) = namespace::finalize(app, &name).await? {
                return Ok(Commit::Done(removed));
            }
        }
        return Ok(Commit::Done(stored));
    }
    if !deletion_finished(kind, &stored) {
        return Ok(Commit::Done(stored));
    }
    // The last finalizer is gone (or the pod stopped): complete the deletion.
    match app.store.delete(key, Some(kv.mod_revision)).await {
        Ok(deleted) => {
            namespace::after_removal(app, kind, ns).await;
            Ok(Commit::Done(decode(&app.transformer, &deleted)?))
        }
        // Someone wrote in between; the next write that finds it finished removes it.
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(Commit::Done(stored)),
        Err(e) => Err(ApiError::store(e)),
    }
}
