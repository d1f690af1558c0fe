//! Storage keys (`/registry/{group|core}/{plural}/[{ns}/]{name}`) and the stored-object codec.

use crate::error::{ApiError, ApiResult};
use crate::request::Kind;
use crate::transformer::Transformer;
use kumo_store::KeyValue;
use serde_json::Value;

fn group_segment(kind: &Kind) -> &'static str {
    if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    }
}

/// The prefix every object of `kind` (in `ns`, when given and namespaced) lives under.
pub fn prefix(kind: &Kind, ns: Option<&str>) -> String {
    let base = format!("/registry/{}/{}/", group_segment(kind), kind.plural);
    match ns {
        Some(ns) if kind.namespaced => format!("{base}{ns}/"),
        _ => base,
    }
}

/// The key of one object.
pub fn object_key(kind: &Kind, ns: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(kind, ns))
}

/// The key of a Namespace object.
pub fn namespace_key(name: &str) -> String {
    format!("/registry/core/namespaces/{name}")
}

/// Decodes a stored object, setting `metadata.resourceVersion` to the value's mod revision.
pub fn decode(t: &Transformer, kv: &KeyValue) -> ApiResult<Value> {
    decode_stale(t, kv).map(|(v, _)| v)
}

/// [`decode`], and whether the stored bytes should be written again (encrypted with a key that
/// is no longer the first, or not encrypted while they should be).
pub fn decode_stale(t: &Transformer, kv: &KeyValue) -> ApiResult<(Value, bool)> {
    let read = t.from_storage(&kv.key, &kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "cannot read a stored object");
        ApiError::internal(format!("stored object {:?} cannot be read: {e}", kv.key))
    })?;
    let mut value: Value = serde_json::from_slice(&read.plain).map_err(|e| {
        ApiError::internal(format!("stored object {:?} is not valid json: {e}", kv.key))
    })?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok((value, read.stale))
}

/// Encodes an object for storage under `key`, without `metadata.resourceVersion` (the store's
/// revision is the only truth), encrypted when the config covers `key`.
pub fn encode(t: &Transformer, key: &str, value: &Value) -> ApiResult<Vec<u8>> {
    let mut value = value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let plain = serde_json::to_vec(&value)
        .map_err(|e| ApiError::internal(format!("failed to encode object: {e}")))?;
    t.to_storage(key, plain).map_err(|e| {
        tracing::error!(%key, error = %e, "cannot encrypt an object");
        ApiError::internal(format!("object {key:?} cannot be stored: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(plural: &str) -> Kind {
        Kind::lookup("", "v1", plural).unwrap()
    }

    #[test]
    fn keys() {
        assert_eq!(
            object_key(&kind("pods"), Some("a"), "web"),
            "/registry/core/pods/a/web"
        );
        assert_eq!(prefix(&kind("pods"), Some("a")), "/registry/core/pods/a/");
        assert_eq!(prefix(&kind("pods"), None), "/registry/core/pods/");
        assert_eq!(
            object_key(&kind("nodes"), None, "n1"),
            "/registry/core/nodes/n1"
        );
        assert_eq!(
            object_key(&kind("namespaces"), Some("x"), "a"),
            namespace_key("a")
        );
    }

    #[test]
    fn resource_version_comes_from_the_store() {
        let kv = KeyValue {
            key: "k".into(),
            value: br#"{"metadata":{"name":"a","resourceVersion":"99"}}"#.to_vec(),
            create_revision: 3,
            mod_revision: 5,
        };
        let t = Transformer::identity();
        let v = decode(&t, &kv).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "5");
        let stored: Value = serde_json::from_slice(&encode(&t, "k", &v).unwrap()).unwrap();
        assert_eq!(stored, serde_json::json!({"metadata": {"name": "a"}}));
        let bad = KeyValue {
            value: b"{".to_vec(),
            ..kv
        };
        assert_eq!(decode(&t, &bad).unwrap_err().code(), 500);
    }
}
