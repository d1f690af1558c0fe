//! Binding: the scheduler's `POST pods/{name}/binding`, which sets `spec.nodeName` once.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, object_key};
use crate::object::{is_deleting, remove_meta, str_at};
use crate::request::Kind;
use crate::update::RETRIES;
use crate::App;
use kumo_api::validation::decode as decode_typed;
use kumo_api::{FieldError, ObjectMeta, ObjectReference};
use kumo_store::StoreError;
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of a binding request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Binding {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    target: ObjectReference,
}

fn parse(name: &str, body: Value) -> ApiResult<String> {
    let binding: Binding = decode_typed(body).map_err(|e| invalid(name, e))?;
    if binding.api_version.as_deref().is_some_and(|v| v != "v1") {
        return Err(ApiError::bad_request("apiVersion: a binding must be v1"));
    }
    if binding.kind.as_deref().is_some_and(|k| k != "Binding") {
        return Err(ApiError::bad_request("kind: the body must be a Binding"));
    }
    if !binding.metadata.name.is_empty() && binding.metadata.name != name {
        return Err(ApiError::bad_request(format!(
            "metadata.name: the name of the binding ({}) does not match the name on the url ({name})",
            binding.metadata.name
        )));
    }
    if !binding.target.kind.is_empty() && binding.target.kind != "Node" {
        return Err(invalid(
            name,
            FieldError::new(
                "target.kind",
                format!(
                    "Unsupported value: {:?}: supported values: \"Node\"",
                    binding.target.kind
                ),
            ),
        ));
    }
    if binding.target.name.is_empty() {
        return Err(invalid(
            name,
            FieldError::new("target.name", "Required value"),
        ));
    }
    Ok(binding.target.name)
}

fn invalid(name: &str, error: FieldError) -> ApiError {
    ApiError(Box::new(kumo_api::Status::invalid(
        "Binding",
        name,
        &[error],
    )))
}

/// Assigns pod `ns/name` to the target node, unless it already has one.
pub async fn bind(app: &App, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
    let node = parse(name, body)?;
    let kind = |plural| {
        Kind::lookup("", "v1", plural)
            .ok_or_else(|| ApiError::internal("core kinds are not registered"))
    };
    let (pods, nodes) = (kind("pods")?, kind("nodes")?);
    if app
        .store
        .get(&object_key(&nodes, None, &node))
        .await
        .map_err(ApiError::store)?
        .is_none()
    {
        return Err(ApiError::not_found(&nodes, &node));
    }
    let key = object_key(&pods, Some(ns), name);
    for _ in 0..RETRIES {
        let kv = app
            .store
            .get(&key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(&pods, name))?;
        let mut pod = decode(&app.transformer, &kv)?;
        if let Some(current) = str_at(&pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(format!(
                "pod {name} is already assigned to node {current}"
            )));
        }
        if is_deleting(&pod) {
            return Err(ApiError::conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a node"
            )));
        }
        remove_meta(&mut pod, "resourceVersion");
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Err(ApiError::internal(format!("stored pod {name} has no spec")));
        };
        spec.insert("nodeName".into(), Value::String(node.clone()));
        mark_scheduled(&mut pod);
        match app
            .store
            .update(
                &key,
                encode(&app.transformer, &key, &pod)?,
                Some(kv.mod_revision),
            )
            .await
        {
            Ok(written) => {
                app.authorizer.pod_bound(&key, &pod, written.mod_revision);
                return Ok(json!({
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Success",
                    "code": 201,
                }));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&pods, name)),
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(ApiError::stale(&pods, name))
}

/// Sets the pod's `PodScheduled` condition to True in the same write as the binding, as
/// Kubernetes does, replacing an earlier `Unschedulable` verdict.
fn mark_scheduled(pod: &mut Value) {
    let Some(obj) = pod.as_object_mut() else {
        return;
    };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    let conditions = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(list)) = conditions else {
        return;
    };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    list.push(json!({
        "type": "PodScheduled",
        "status": "True",
        "lastTransitionTime": chrono::Utc::now(),
    }));
}
