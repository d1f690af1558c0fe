//! The service accounts every namespace and pod has: the `default` account made with each
//! namespace (and made sure of at start), and a pod's account set and checked at creation, as
//! Kubernetes' ServiceAccount admission plugin does.

use crate::create::create;
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key};
use crate::object::is_deleting;
use crate::request::Kind;
use crate::App;
use kumo_api::service_account::DEFAULT_SERVICE_ACCOUNT;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;

fn account_kind() -> ApiResult<Kind> {
    Kind::lookup("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("the serviceaccount kind is not registered"))
}

/// Creates namespace `ns`'s `default` account unless it is there. Boxed: creating a namespace
/// calls it, and it creates through the same path.
pub fn ensure_default<'a>(
    app: &'a App,
    ns: &'a str,
) -> Pin<Box<dyn Future<Output = ApiResult<()>> + Send + 'a>> {
    Box::pin(async move {
        let kind = account_kind()?;
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns}});
        match create(app, kind, Some(ns), body).await {
            Ok(_) => Ok(()),
            Err(e) if e.0.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// Makes sure every namespace that is not terminating has its `default` account (namespaces
/// made before service accounts existed, or whose account was lost to a crash).
pub async fn ensure_defaults(app: &App) -> ApiResult<()> {
    let (kvs, _) = app
        .store
        .list("/registry/core/namespaces/")
        .await
        .map_err(ApiError::store)?;
    for kv in kvs {
        let ns = decode(&app.transformer, &kv)?;
        if is_deleting(&ns) {
            continue;
        }
        let name = crate::object::name(&ns).to_string();
        match ensure_default(app, &name).await {
            Ok(()) => {}
            // Being deleted meanwhile.
            Err(e) if e.code() == 403 || e.code() == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A new pod's account: `spec.serviceAccountName` defaults to `default`; the account must exist
/// in the pod's namespace, and when it turns automounting off, so does the pod unless it says
/// otherwise itself.
pub async fn admit_pod(app: &App, pod_name: &str, ns: &str, pod: &mut Value) -> ApiResult<()> {
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::internal("an admitted pod has no spec"))?;
    let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => {
            spec.insert("serviceAccountName".into(), json!(DEFAULT_SERVICE_ACCOUNT));
            DEFAULT_SERVICE_ACCOUNT.to_string()
        }
    };
    let kind = account_kind()?;
    let kv = app
        .store
        .get(&object_key(&kind, Some(ns), &account))
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "pods {pod_name:?} is forbidden: error looking up service account {ns}/{account}: serviceaccount {account:?} not found"
            ))
        })?;
    let sa = decode(&app.transformer, &kv)?;
    if sa.get("automountServiceAccountToken") == Some(&json!(false))
        && spec.get("automountServiceAccountToken").is_none()
    {
        spec.insert("automountServiceAccountToken".into(), json!(false));
    }
    Ok(())
}
