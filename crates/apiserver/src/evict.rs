//! Eviction: `POST pods/{name}/eviction` (`policy/v1` Eviction), what `kumo drain` asks for.
//!
//! A pod that a controller will replace is not deleted here: it is marked
//! ([`ANNOTATION_EVICTION_REQUESTED`]) and its controller takes it away when that is safe. An
//! App replica goes only once a replacement is Ready elsewhere (the App controller surges
//! first, then drains it out of the router); an MLTask replica stops its gang gracefully and
//! the task is requeued without counting an attempt, as preemption does. Kubernetes' eviction
//! answers 429 while a disruption budget forbids it and the caller retries; here the
//! controllers hold the budget, so the eviction is accepted at once and the caller waits for
//! the pod to go. Any other pod is deleted with its grace period, as Kubernetes does.

use crate::delete;
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, encode, object_key};
use crate::object::{is_deleting, labels, remove_meta};
use crate::query::MAX_SECONDS;
use crate::request::Kind;
use crate::update::RETRIES;
use crate::App;
use kumo_api::keys::{pod_owner, PodOwner as Owner, ANNOTATION_EVICTION_REQUESTED};
use kumo_api::validation::decode as decode_typed;
use kumo_api::{FieldError, ObjectMeta};
use kumo_store::StoreError;
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of an eviction request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Eviction {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    delete_options: Option<DeleteOptions>,
}

/// The parts of `DeleteOptions` an eviction honours; the others Kubernetes' clients send
/// (`propagationPolicy`, `preconditions`, …) are accepted and have no effect on a pod.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    dry_run: Vec<String>,
}

/// What an eviction asks, once checked.
#[derive(Debug, PartialEq)]
struct Request {
    grace: Option<i64>,
    dry_run: bool,
}

fn parse(name: &str, body: Value) -> ApiResult<Request> {
    let e: Eviction = decode_typed(body).map_err(|e| invalid(name, e))?;
    if e.api_version
        .as_deref()
        .is_some_and(|v| v != "policy/v1" && v != "policy/v1beta1")
    {
        return Err(invalid(
            name,
            FieldError::new("apiVersion", "Unsupported value: must be policy/v1"),
        ));
    }
    if e.kind.as_deref().is_some_and(|k| k != "Eviction") {
        return Err(invalid(
            name,
            FieldError::new("kind", "Unsupported value: must be Eviction"),
        ));
    }
    if !e.metadata.name.is_empty() && e.metadata.name != name {
        return Err(invalid(
            name,
            FieldError::new(
                "metadata.name",
                format!(
                    "Invalid value: {:?}: the name of the eviction does not match the pod's name on the url ({name})",
                    e.metadata.name
                ),
            ),
        ));
    }
    let options = e.delete_options.unwrap_or_default();
    if let Some(g) = options.grace_period_seconds {
        if !(0..=MAX_SECONDS).contains(&g) {
            return Err(invalid(
                name,
                FieldError::new(
                    "deleteOptions.gracePeriodSeconds",
                    format!("Invalid value: {g}: must be from 0 to {MAX_SECONDS}"),
                ),
            ));
        }
    }
    let dry_run = match options.dry_run.as_slice() {
        [] => false,
        [all] if all == "All" => true,
        _ => {
            return Err(invalid(
                name,
                FieldError::new(
                    "deleteOptions.dryRun",
                    "Unsupported value: supported values: \"All\"",
                ),
            ))
        }
    };
    Ok(Request {
        grace: options.grace_period_seconds,
        dry_run,
    })
}

fn invalid(name: &str, error: FieldError) -> ApiError {
    ApiError(Box::new(kumo_api::Status::invalid(
        "Eviction",
        name,
        &[error],
    )))
}

fn owner(pod: &Value) -> Owner {
    pod_owner(&labels(pod))
}

fn accepted(message: String) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Success",
        "code": 201,
        "message": message,
    })
}

/// Evicts pod `ns/name`.
pub async fn evict(app: &App, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
    let request = parse(name, body)?;
    let pods = Kind::lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("core kinds are not registered"))?;
    let key = object_key(&pods, Some(ns), name);
    for _ in 0..RETRIES {
        let kv = app
            .store
            .get(&key)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(&pods, name))?;
        let mut pod = decode(&app.transformer, &kv)?;
        if is_deleting(&pod) {
            return Ok(accepted(format!("pod {name} is already being deleted")));
        }
        let why = match owner(&pod) {
            Owner::App(a) => {
                format!("pod {name} will go once a replacement of app {a} is ready on another node")
            }
            Owner::MLTask(t) => {
                format!("mltask {t} will stop its replicas gracefully and go back to its queue")
            }
            Owner::None => {
                if request.dry_run {
                    return Ok(accepted(format!("pod {name} would be deleted (dry run)")));
                }
                delete::delete(app, pods, Some(ns), name, request.grace).await?;
                return Ok(accepted(format!("pod {name} deleted")));
            }
        };
        if request.dry_run || annotations(&pod).contains_key(ANNOTATION_EVICTION_REQUESTED) {
            return Ok(accepted(why));
        }
        remove_meta(&mut pod, "resourceVersion");
        mark(&mut pod);
        match app
            .store
            .update(
                &key,
                encode(&app.transformer, &key, &pod)?,
                Some(kv.mod_revision),
            )
            .await
        {
            Ok(_) => return Ok(accepted(why)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(&pods, name)),
            Err(e) => return Err(ApiError::store(e)),
        }
    }
    Err(ApiError::stale(&pods, name))
}

/// The pod's annotations.
fn annotations(pod: &Value) -> serde_json::Map<String, Value> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Sets the eviction mark (the time it was asked) in the pod's annotations.
fn mark(pod: &mut Value) {
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    if let Some(a) = annotations.as_object_mut() {
        a.insert(
            ANNOTATION_EVICTION_REQUESTED.into(),
            json!(kumo_api::keys::format_time(chrono::Utc::now())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::keys::{LABEL_APP, LABEL_PROCESS, LABEL_RELEASE, LABEL_TASK};

    fn check(body: Value, expected: Result<Request, &str>) {
        match (parse("web-1", body.clone()), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{body}"),
            (Err(e), Err(want)) => {
                let text = serde_json::to_string(&e.0).unwrap();
                assert!(text.contains(want), "{body}: {text} lacks {want}");
                assert_eq!(e.code(), 422, "{body}");
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn eviction_bodies() {
        let none = Request {
            grace: None,
            dry_run: false,
        };
        check(json!({}), Ok(none));
        check(
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                   "metadata": {"name": "web-1", "namespace": "team"},
                   "deleteOptions": {"gracePeriodSeconds": 5, "propagationPolicy": "Background"}}),
            Ok(Request {
                grace: Some(5),
                dry_run: false,
            }),
        );
        check(
            json!({"deleteOptions": {"dryRun": ["All"]}}),
            Ok(Request {
                grace: None,
                dry_run: true,
            }),
        );
        check(json!({"apiVersion": "v1"}), Err("apiVersion"));
        check(json!({"kind": "Pod"}), Err("kind"));
        check(json!({"metadata": {"name": "other"}}), Err("metadata.name"));
        check(
            json!({"deleteOptions": {"gracePeriodSeconds": -1}}),
            Err("deleteOptions.gracePeriodSeconds"),
        );
        check(
            json!({"deleteOptions": {"gracePeriodSeconds": i64::MAX}}),
            Err("deleteOptions.gracePeriodSeconds"),
        );
        check(
            json!({"deleteOptions": {"dryRun": ["Some"]}}),
            Err("deleteOptions.dryRun"),
        );
        check(json!({"target": {}}), Err("target"));
    }

    #[test]
    fn owners_from_labels() {
        let pod = |labels: Value| json!({"metadata": {"name": "p", "labels": labels}});
        assert_eq!(owner(&pod(json!({}))), Owner::None);
        assert_eq!(
            owner(&pod(json!({LABEL_APP: "web"}))),
            Owner::None,
            "a one-off"
        );
        assert_eq!(
            owner(&pod(
                json!({LABEL_APP: "web", LABEL_RELEASE: "2", LABEL_PROCESS: "web"})
            )),
            Owner::App("web".into())
        );
        assert_eq!(
            owner(&pod(json!({LABEL_TASK: "train"}))),
            Owner::MLTask("train".into())
        );
    }
}
