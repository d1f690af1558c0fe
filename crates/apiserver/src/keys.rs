//! Storage keys (`/registry/{group|core}/{plural}/[{ns}/]{name}`) and the stored-object codec.

use crate::error::{ApiError, ApiResult};
use crate::request::Kind;
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
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut value: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {:?} is not valid json: {e}", kv.key))
    })?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(value)
}

/// Encodes an object for storage, without `metadata.resourceVersion` (the store's revision is
/// the only truth).
pub fn encode(value: &Value) -> ApiResult<Vec<u8>> {
    let mut value = value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&value)
        .map_err(|e| ApiError::internal(format!("failed to encode object: {e}")))
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
        let v = decode(&kv).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "5");
        let stored: Value = serde_json::from_slice(&encode(&v).unwrap()).unwrap();
        assert_eq!(stored, serde_json::json!({"metadata": {"name": "a"}}));
        let bad = KeyValue {
            value: b"{".to_vec(),
            ..kv
        };
        assert_eq!(decode(&bad).unwrap_err().code(), 500);
    }
}
