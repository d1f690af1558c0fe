//! Create: type and namespace checks, admission, server-set metadata, then `store.create`.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, namespace_key, object_key};
use crate::object::{get_meta, is_deleting, name, now, remove_meta, set_meta};
use crate::request::Kind;
use crate::App;
use kumo_store::StoreError;
use serde_json::{json, Value};

/// Metadata only the server sets; whatever a client sends for these is dropped.
const SERVER_FIELDS: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// Checks (or fills in) `apiVersion` and `kind` against the kind the path names.
pub fn check_type(kind: &Kind, body: &mut Value) -> ApiResult<()> {
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a json object",
        ));
    };
    for (field, want) in [
        ("apiVersion", kind.api_version()),
        ("kind", kind.kind.to_string()),
    ] {
        match map.get(field) {
            None | Some(Value::Null) => {
                map.insert(field.into(), Value::String(want));
            }
            Some(Value::String(got)) if *got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "{field}: the object's {field} {got} does not match {want:?}, the {field} of {} served at this path",
                    kind.plural
                )))
            }
        }
    }
    Ok(())
}

/// Checks (or fills in) `metadata.namespace` against the namespace in the path.
pub fn check_namespace_field(kind: &Kind, ns: Option<&str>, body: &mut Value) -> ApiResult<()> {
    let (true, Some(ns)) = (kind.namespaced, ns) else {
        return Ok(());
    };
    match get_meta(body, "namespace") {
        None | Some(Value::Null) => set_meta(body, "namespace", Value::String(ns.into())),
        Some(Value::String(got)) if got == ns => {}
        Some(got) => {
            return Err(ApiError::bad_request(format!(
                "metadata.namespace: the namespace of the object ({got}) does not match the namespace on the request ({ns})"
            )))
        }
    }
    Ok(())
}

/// The namespace must exist and not be terminating for anything to be created in it; returns
/// it as stored.
async fn check_namespace_open(app: &App, ns: &str) -> ApiResult<Value> {
    let kv = app
        .store
        .get(&namespace_key(ns))
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found_resource("namespaces", ns))?;
    let namespace = decode(&app.transformer, &kv)?;
    if is_deleting(&namespace) {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(namespace)
}

/// Kubernetes ignores the status a client sends on create, except for these kinds.
fn keeps_status_on_create(kind: &Kind) -> bool {
    !kind.has_status || kind.is("", "nodes") || kind.is_namespace()
}

/// Five random `[a-z0-9]`, as `generateName` appends.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Creates an object from a client's body, returning it as stored.
pub async fn create(app: &App, kind: Kind, ns: Option<&str>, mut body: Value) -> ApiResult<Value> {
    check_type(&kind, &mut body)?;
    check_namespace_field(&kind, ns, &mut body)?;
    let namespace = match (kind.namespaced, ns) {
        (true, Some(ns)) => Some(check_namespace_open(app, ns).await?),
        _ => None,
    };
    for field in SERVER_FIELDS {
        remove_meta(&mut body, field);
    }
    if !keeps_status_on_create(&kind) {
        if let Some(map) = body.as_object_mut() {
            map.remove("status");
        }
    }
    let generate = match (get_meta(&body, "name"), get_meta(&body, "generateName")) {
        (None | Some(Value::Null), Some(Value::String(prefix))) => Some(prefix.clone()),
        (Some(Value::String(n)), Some(Value::String(prefix))) if n.is_empty() => {
            Some(prefix.clone())
        }
        _ => None,
    };
    let attempts = if generate.is_some() { 5 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let mut obj = body.clone();
        if let Some(prefix) = &generate {
            set_meta(
                &mut obj,
                "name",
                Value::String(format!("{prefix}{}", random_suffix())),
            );
        }
        let object_name = name(&obj).to_string();
        let mut admitted =
            (kind.admit)(obj).map_err(|errors| ApiError::invalid(&kind, &object_name, &errors))?;
        set_meta(
            &mut admitted,
            "uid",
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        set_meta(&mut admitted, "creationTimestamp", now());
        set_meta(&mut admitted, "generation", json!(1));
        if kind.is_namespace() && admitted.pointer("/status/phase").is_none() {
            if let Some(map) = admitted.as_object_mut() {
                map.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        if kind.is("", "pods") {
            crate::pod_security::admit(&object_name, namespace.as_ref(), &admitted)?;
            let ns = ns.unwrap_or(kumo_api::DEFAULT_NAMESPACE);
            crate::service_accounts::admission::admit_pod(app, &object_name, ns, &mut admitted)
                .await?;
        }
        // A token's secret is made here and shown once, in this response; only its hash is kept.
        let secret = if kind.is("auth.kumo.dev", "tokens") {
            Some(crate::tokens::prepare(&mut admitted, chrono::Utc::now())?)
        } else {
            None
        };
        crate::domains::check_unique(app, &kind, None, &admitted).await?;
        let name = name(&admitted).to_string();
        let key = object_key(&kind, ns, &name);
        match app
            .store
            .create(&key, encode(&app.transformer, &key, &admitted)?)
            .await
        {
            Ok(kv) => {
                if kind.is_namespace() {
                    // The namespace is made: a failure here leaves it without its account until
                    // the next start makes sure of it, and is only logged.
                    if let Err(e) =
                        crate::service_accounts::admission::ensure_default(app, &name).await
                    {
                        tracing::warn!(namespace = %name, error = %e, "cannot create the default service account");
                    }
                }
                let mut created = decode(&app.transformer, &kv)?;
                if let Some(secret) = secret {
                    crate::tokens::reveal(&mut created, secret);
                }
                return Ok(created);
            }
            Err(StoreError::AlreadyExists(_)) => {
                last = Some(ApiError::already_exists(&kind, &name))
            }
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::internal("create made no attempt")))
}
