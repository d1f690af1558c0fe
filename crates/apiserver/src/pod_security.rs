//! Pod security admission: a pod is created only if its namespace's Pod Security Standards
//! level (`pod-security.kubernetes.io/enforce`, `baseline` when unset) allows it. Pod specs
//! cannot change after creation, so creation is the one place to check.

use crate::error::{ApiError, ApiResult};
use kumo_api::pod::PodSpec;
use kumo_api::pod_security::{check, refusal, Level};
use serde_json::Value;
use std::collections::BTreeMap;

/// Checks the admitted pod `pod` against the level of `namespace` (the stored object).
pub fn admit(name: &str, namespace: Option<&Value>, pod: &Value) -> ApiResult<()> {
    let labels: BTreeMap<String, String> = namespace
        .and_then(|ns| ns.pointer("/metadata/labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let level = Level::of_namespace(&labels);
    let spec: PodSpec = pod
        .get("spec")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::internal(format!("an admitted pod does not decode: {e}")))?
        .unwrap_or_default();
    let violations = check(&spec, level);
    if violations.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "pods {name:?} is forbidden: {}",
        refusal(level, &violations)
    )))
}
