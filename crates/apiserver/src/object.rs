//! Small accessors over object JSON: metadata fields, labels, and the pod facts deletion needs.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A metadata field.
pub fn get_meta<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get("metadata")?.get(key)
}

/// Sets a metadata field, creating `metadata` when absent; a no-op on a malformed object
/// (admission reports those).
pub fn set_meta(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(key.to_string(), value);
        }
    }
}

/// Removes a metadata field, if there is one.
pub fn remove_meta(obj: &mut Value, key: &str) -> Option<Value> {
    obj.get_mut("metadata")?.as_object_mut()?.remove(key)
}

/// A string at a path of object keys.
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(obj, |v, seg| v.get(seg))
        .and_then(Value::as_str)
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn has_finalizers(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}

/// A pod on a node whose containers may still run: deleting it waits for the agent.
pub fn is_running_bound_pod(kind_is_pod: bool, obj: &Value) -> bool {
    kind_is_pod
        && str_at(obj, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty())
        && !matches!(
            str_at(obj, &["status", "phase"]),
            Some("Succeeded" | "Failed")
        )
}

/// Now, to the second, as the wire's timestamps are.
pub fn now() -> Value {
    let now = chrono::Utc::now();
    let secs = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    serde_json::to_value(secs).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors() {
        let pod = json!({"metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(name(&pod), "p");
        assert_eq!(labels(&pod).get("a").map(String::as_str), Some("1"));
        assert!(has_finalizers(&pod));
        assert!(!is_deleting(&pod));
        assert!(is_running_bound_pod(true, &pod));
        assert!(!is_running_bound_pod(false, &pod));
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}});
        assert!(!is_running_bound_pod(true, &done));
        assert!(!is_running_bound_pod(true, &json!({"spec": {}})));
        let mut weird = json!({"metadata": 5});
        set_meta(&mut weird, "name", json!("x"));
        assert_eq!(weird, json!({"metadata": 5}));
        let mut empty = json!({});
        set_meta(&mut empty, "name", json!("x"));
        assert_eq!(name(&empty), "x");
        assert_eq!(remove_meta(&mut empty, "name"), Some(json!("x")));
        assert_eq!(get_meta(&empty, "name"), None);
        assert!(now().as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
