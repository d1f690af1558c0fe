//! `authorization.k8s.io/v1` SelfSubjectAccessReview and SubjectAccessReview: "may this user
//! do this?", answered by the server's authorizer. Only POST; nothing is stored.

use crate::authz::{Attributes, Decision};
use crate::error::{ApiError, ApiResult};
use crate::App;
use kumo_api::UserInfo;
use serde::Deserialize;
use serde_json::{json, Value};

pub const GROUP: &str = "authorization.k8s.io";

/// The verbs a review may ask about (the authorizer's attributes hold a static verb).
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "bind",
    "escalate",
    "impersonate",
    "*",
];

/// The verb's static name, if it is one the server knows.
pub fn known_verb(verb: &str) -> Option<&'static str> {
    VERBS.iter().copied().find(|v| *v == verb)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceAttributes {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    resource_attributes: Option<ResourceAttributes>,
    #[serde(default)]
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    uid: String,
}

/// Answers a review: `self_review` asks for the requesting user, else for `spec.user` and
/// `spec.groups`. The answer is the request with `status.allowed` and `status.reason`.
pub fn review(app: &App, requester: &UserInfo, self_review: bool, body: Value) -> ApiResult<Value> {
    let kind = if self_review {
        "SelfSubjectAccessReview"
    } else {
        "SubjectAccessReview"
    };
    let spec_value = body.get("spec").cloned().unwrap_or(Value::Null);
    if spec_value.is_null() {
        return Err(ApiError::bad_request("spec: Required value"));
    }
    let spec: Spec = kumo_api::validation::decode(spec_value)
        .map_err(|e| ApiError::bad_request(format!("spec.{e}")))?;
    let Some(ra) = spec.resource_attributes else {
        return Err(ApiError::bad_request(
            "spec.resourceAttributes: Required value: kumo answers resource requests only",
        ));
    };
    let user = if self_review {
        requester.clone()
    } else {
        if spec.user.is_empty() && spec.groups.is_empty() {
            return Err(ApiError::bad_request(
                "spec.user: Invalid value: at least one of user or group must be specified",
            ));
        }
        UserInfo {
            username: spec.user.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
        }
    };
    let Some(verb) = known_verb(&ra.verb) else {
        return Err(ApiError::bad_request(format!(
            "spec.resourceAttributes.verb: Unsupported value: {:?}: supported values: {}",
            ra.verb,
            VERBS.join(", ")
        )));
    };
    let attributes = Attributes {
        user,
        verb,
        api_group: ra.group.clone(),
        resource: ra.resource.clone(),
        subresource: ra.subresource.clone(),
        namespace: ra.namespace.clone(),
        name: ra.name.clone(),
    };
    let (allowed, reason) = match app.authorizer.authorize(&attributes) {
        Decision::Allow => (true, String::new()),
        Decision::Deny(reason) => (false, reason),
    };
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = Value::String(reason);
    }
    let mut answer = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": body.get("spec").cloned().unwrap_or(Value::Null),
    });
    answer["status"] = status;
    Ok(answer)
}
