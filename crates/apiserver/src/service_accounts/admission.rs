//! The service accounts every namespace and pod has: the `default` account made with each
//! namespace (made sure of at start, and put back when deleted, as Kubernetes' service-account
//! controller does), and a pod's account set and checked at creation, as Kubernetes'
//! ServiceAccount admission plugin does.

use crate::create::create;
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key};
use crate::object::is_deleting;
use crate::request::Kind;
use crate::App;
use kumo_api::service_account::DEFAULT_SERVICE_ACCOUNT;
use kumo_store::EventKind;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

const ACCOUNTS_PREFIX: &str = "/registry/core/serviceaccounts/";

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

/// Puts a namespace's `default` account back when it is deleted while the namespace lives on
/// (pods that name no account run as it), until the server shuts down. Each time its watch
/// (re)starts it first sweeps every namespace, so a deletion it did not see is healed too.
pub async fn keep_defaults(app: Arc<App>) {
    let shutdown = crate::shutting_down(app.shutdown.clone());
    tokio::pin!(shutdown);
    loop {
        let followed = async {
            let revision = app
                .store
                .current_revision()
                .await
                .map_err(ApiError::store)?;
            ensure_defaults(&app).await?;
            let mut events = app
                .store
                .watch(ACCOUNTS_PREFIX, revision)
                .await
                .map_err(ApiError::store)?;
            while let Some(Ok(event)) = events.next().await {
                let ns = event
                    .kv
                    .key
                    .strip_prefix(ACCOUNTS_PREFIX)
                    .and_then(|rest| rest.strip_suffix(&format!("/{DEFAULT_SERVICE_ACCOUNT}")));
                if let (EventKind::Delete, Some(ns)) = (event.kind, ns) {
                    match ensure_default(&app, ns).await {
                        // The namespace is going, or gone.
                        Err(e) if e.code() == 403 || e.code() == 404 => {}
                        other => other?,
                    }
                }
            }
            Ok::<(), ApiError>(())
        };
        tokio::select! {
            _ = &mut shutdown => return,
            ended = followed => {
                if let Err(e) = ended {
                    tracing::warn!(error = %e, "keeping the default service accounts failed; trying again");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
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
